"""Which templates are in force, where each came from, and changing them at run time.

Built-in templates ship with the package; a directory may add more; the API adds,
replaces and deletes its own, which are stored and outlive restarts. A template added
through the API under a built-in's name replaces it until it is deleted again.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from opendoctor.inspector.templates.compiler import compile_template
from opendoctor.inspector.templates.deductions import Plan
from opendoctor.inspector.templates.defaults import default_texts
from opendoctor.inspector.templates.engine import Engine
from opendoctor.inspector.templates.model import Template, TemplateError
from opendoctor.store.templates import TemplateStore

log = logging.getLogger(__name__)


def _check(text: str, in_force: dict[str, Template]) -> Template:
    template = compile_template(text, "template")
    # Cause cycles are checked against everything in force except what it would replace.
    others = [t for name, t in in_force.items() if name != template.name]
    return compile_template(text, "template", others)


def _read_dir(folder: Path) -> list[tuple[Path, str]]:
    # Read once at start, before the service takes events.
    if not folder.is_dir():
        raise TemplateError(str(folder), ["not a directory"])
    return [(path, path.read_text()) for path in sorted(folder.glob("*.y*ml"))]


@dataclass(slots=True)
class Installed:
    template: Template
    origin: str  # built-in | file | api
    source: str


class Registry:
    def __init__(self, engine: Engine, store: TemplateStore, check_seconds: float = 10.0) -> None:
        self.engine = engine
        self.store = store
        self.check_seconds = check_seconds
        # Checks run on threads of their own, two at most: a check that overruns its
        # budget cannot be stopped, but it keeps only its thread, and a flood of them
        # waits here (and runs out of budget) rather than taking the process's threads.
        self._checks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="template-check")
        self.installed: dict[str, Installed] = {}
        self._fallback: dict[str, Installed] = {}  # built-ins an API template replaces
        self._texts: dict[str, str] = {}  # API templates' YAML, as stored
        # One change at a time: each is checked (cause cycles included) against what is
        # in force, so two at once could each pass and together not.
        self._lock = asyncio.Lock()

    def _others(self, name: str | None = None) -> list[Template]:
        return [i.template for n, i in self.installed.items() if n != name]

    def _install(self, item: Installed) -> Plan:
        self.installed[item.template.name] = item
        return self.engine.add(item.template)

    async def load(self, defaults: bool, folder: Path | None) -> None:
        """Load at start; a bad built-in or file template stops the service (say where)."""
        if defaults:
            for file, text in default_texts().items():
                template = compile_template(text, f"built-in {file}", self._others())
                self._install(Installed(template, "built-in", file))
        if folder is not None:
            for path, text in _read_dir(folder):
                template = compile_template(text, str(path), self._others())
                if template.name in self.installed:
                    log.warning(
                        "template file replaces a built-in", extra={"template": template.name}
                    )
                self._install(Installed(template, "file", str(path)))
        for name, text in (await self.store.load()).items():
            try:
                template = compile_template(text, f"stored template {name}", self._others(name))
            except TemplateError as exc:
                # Accepted once, so it was valid; a newer opendoctor may judge otherwise.
                # Keep it stored and say so, rather than refusing to start.
                log.error("stored template no longer valid", extra={"error": str(exc)})
                continue
            self._texts[name] = text
            self._replace(Installed(template, "api", "api"))

    def _replace(self, item: Installed) -> Plan:
        old = self.installed.get(item.template.name)
        if old is not None and old.origin != "api":
            self._fallback[item.template.name] = old
        return self._install(item)

    async def validate(self, text: str) -> Template:
        """Compiled off the event loop: the text is a user's, and checking it (YAML,
        conditions, regexes, cause cycles) must not hold up the handling of faults."""
        in_force = {name: item.template for name, item in self.installed.items()}
        loop = asyncio.get_running_loop()
        check = loop.run_in_executor(self._checks, _check, text, in_force)
        done, _ = await asyncio.wait([check], timeout=self.check_seconds)
        if not done:
            check.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody waits
            raise TemplateError(
                "template",
                [
                    f"checking it took longer than {self.check_seconds:g} s "
                    "(inspector.template_check_seconds), or other templates were being "
                    "checked: make it smaller, or try again"
                ],
            )
        return check.result()

    def close(self) -> None:
        self._checks.shutdown(wait=False, cancel_futures=True)

    async def put(self, text: str) -> tuple[Installed, bool, Plan]:
        """Add or replace an API template; returns it, whether it is new, and its plan."""
        async with self._lock:
            template = await self.validate(text)
            await self.store.put(template.name, text)
            created = template.name not in self.installed
            item = Installed(template, "api", "api")
            self._texts[template.name] = text
            return item, created, self._replace(item)

    async def delete(self, name: str) -> tuple[Installed, Plan] | None:
        """Delete an API template (a built-in it replaced comes back); returns it and the
        plan of what changed. Built-in and file templates cannot be deleted here:
        `PermissionError` says how to switch them off."""
        async with self._lock:
            item = self.installed.get(name)
            if item is None:
                return None
            if item.origin != "api":
                how = (
                    "turn built-ins off with OPENDOCTOR_INSPECTOR__DEFAULT_TEMPLATES=false"
                    if item.origin == "built-in"
                    else "remove its file from inspector.templates_dir"
                )
                raise PermissionError(
                    f"{name!r} is a {item.origin} template ({item.source}); {how}, or "
                    "replace it by adding a template of the same name"
                )
            await self.store.delete(name)
            return item, self._uninstall(name)

    def _uninstall(self, name: str) -> Plan:
        del self.installed[name]
        self._texts.pop(name, None)
        plan = self.engine.remove(name)
        fallback = self._fallback.pop(name, None)
        if fallback is not None:
            plan.merge(self._install(fallback))
        return plan

    async def stale(self) -> bool:
        """Whether the API templates stored differ from those in force here."""
        return await self.store.load() != self._texts

    async def sync(self) -> Plan:
        """Take up the API templates other processes stored, replaced or deleted (scaled
        out, every inspector holds every template); returns the plan of what changed."""
        plan = Plan()
        async with self._lock:
            # Read under the lock: a change of our own committing meanwhile must not be
            # mistaken for a deletion elsewhere.
            stored = await self.store.load()
            for name, text in stored.items():
                if self._texts.get(name) == text:
                    continue
                try:
                    template = compile_template(text, f"stored template {name}", self._others(name))
                except TemplateError as exc:
                    log.error("stored template not taken up", extra={"error": str(exc)})
                    continue
                log.info("template taken up from the database", extra={"template": name})
                self._texts[name] = text
                plan.merge(self._replace(Installed(template, "api", "api")))
            for name in [n for n in self._texts if n not in stored]:
                log.info("template deleted elsewhere", extra={"template": name})
                plan.merge(self._uninstall(name))
        return plan
