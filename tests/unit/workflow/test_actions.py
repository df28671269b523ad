"""The action registry, input checks and the standard actions; std.http against a real
local server, held to the egress policy as alarm callbacks are."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from opendoctor.controller.memory import MemoryVim
from opendoctor.core.egress import EgressPolicy
from opendoctor.infra.httpclient import HttpClient
from opendoctor.workflow.actions import (
    ActionContext,
    ActionDef,
    ActionError,
    ActionRegistry,
    Param,
    Toolbox,
    builtin_actions,
    define,
)
from opendoctor.workflow.std_actions import ACTION_HEADER, TIMER_ACTIONS, timer_seconds
from tests.tcpproxy import free_port

CTX = ActionContext("ex-1", "task-1", "act-1", "project-a")


@dataclass
class Site:
    """A local HTTP server that records what it was asked."""

    address: str
    seen: list[dict[str, Any]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://{self.address}{path}"


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    port = free_port()
    found = Site(f"127.0.0.1:{port}")

    async def record(request: web.Request) -> web.StreamResponse:
        found.seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": await request.read(),
            }
        )
        if request.path == "/json":
            return web.json_response({"ok": True, "n": 1})
        if request.path == "/missing":
            return web.json_response({"error": "no such thing"}, status=404)
        if request.path == "/moved":
            raise web.HTTPFound("/json")
        if request.path == "/big":
            return web.Response(body=b"x" * 100_000)
        return web.Response(text="plain words", headers={"X-Answer": "42"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield found
    finally:
        await runner.cleanup()


@pytest.fixture
async def actions(site: Site) -> AsyncIterator[ActionRegistry]:
    # As the app builds it for callbacks: the policy (the test site allowed) and a cap.
    http = HttpClient(egress=EgressPolicy.of([site.address]), max_response_bytes=1000)
    try:
        yield builtin_actions(Toolbox(vim=MemoryVim([], []), http=http))
    finally:
        await http.close()


async def call(registry: ActionRegistry, name: str, **given: Any) -> Any:
    d = registry.get(name)
    assert d is not None, name
    return await d.run(given, CTX)


async def failure(registry: ActionRegistry, name: str, **given: Any) -> ActionError:
    with pytest.raises(ActionError) as failed:
        await call(registry, name, **given)
    return failed.value


# ----- the registry and input checks ------------------------------------------------------


def test_the_registry_finds_actions_by_name() -> None:
    registry = builtin_actions(Toolbox(vim=MemoryVim([], [])))
    names = registry.names()
    assert names == sorted(names)
    expected = {"std.noop", "std.echo", "std.fail", "std.http", "std.wait", "std.sleep"}
    expected |= {"vim.live_migrate", "nova.servers_live_migrate", "fence.power_off", "notify"}
    assert expected <= set(names)
    assert "std.http" in registry and "std.nothing" not in registry
    assert registry.get("std.nothing") is None
    assert [d.name for d in registry.all()] == names
    assert all(d.description for d in registry.all())
    with pytest.raises(ValueError, match="registered already"):
        registry.add(define("std.echo", [], registry.all()[0].run))


def test_input_problems_name_what_is_missing_or_unexpected() -> None:
    registry = builtin_actions(Toolbox(vim=MemoryVim([], [])))
    http = registry.get("std.http")
    assert http is not None
    assert http.input_problem({}) == "missing input: url"
    assert http.input_problem({"url": "http://x", "verb": "GET"}) == "unexpected input: verb"
    assert http.input_problem({"url": "http://x", "method": "POST", "json": {}}) is None
    assert http.signature().startswith('url, method="GET", params=null')


async def test_run_refuses_bad_input_and_fills_in_defaults() -> None:
    seen: list[dict[str, Any]] = []

    async def fn(given: dict[str, Any], ctx: ActionContext) -> None:
        seen.append(given)

    d = define("t.x", [Param("a", True), Param("b", default=2)], fn)
    with pytest.raises(ActionError, match=r"^t\.x: missing input: a$"):
        await d.run({}, CTX)
    with pytest.raises(ActionError, match="unexpected input: c"):
        await d.run({"a": 1, "c": 3}, CTX)
    await d.run({"a": 1}, CTX)
    await d.run({"a": 1, "b": None}, CTX)
    assert seen == [{"a": 1, "b": 2}, {"a": 1, "b": None}]


def test_which_actions_may_run_again_after_a_crash() -> None:
    registry = builtin_actions(Toolbox(vim=MemoryVim([], [])))

    def safe(name: str, **given: Any) -> bool:
        d = registry.get(name)
        assert isinstance(d, ActionDef)
        return d.is_safe(given)

    assert safe("std.noop") and safe("std.echo", output=1) and safe("std.sleep")
    assert safe("std.http", url="http://x") and safe("std.http", url="http://x", method="head")
    assert not safe("std.http", url="http://x", method="POST")
    assert safe("vim.list_servers") and safe("vim.force_down", host="h")
    assert not safe("vim.evacuate", server_id="s") and not safe("notify", event_type="e")


# ----- std.noop, std.echo, std.fail, timers, notify ---------------------------------------


async def test_noop_echo_and_fail() -> None:
    registry = builtin_actions(Toolbox(vim=MemoryVim([], [])))
    assert await call(registry, "std.noop") is None
    assert await call(registry, "std.echo", output={"a": [1, 2]}) == {"a": [1, 2]}
    failed = await failure(registry, "std.fail", error_data={"why": "asked"})
    assert failed.result == {"why": "asked"} and "on purpose" in str(failed)
    assert (await failure(registry, "std.fail")).result is None
    assert "missing input: output" in str(await failure(registry, "std.echo"))


async def test_timers_are_checked_and_capped() -> None:
    registry = builtin_actions(Toolbox(vim=MemoryVim([], [])))
    assert {"std.wait", "std.sleep"} == TIMER_ACTIONS
    assert all(registry.get(n) is not None and registry.get(n).safe for n in TIMER_ACTIONS)  # type: ignore[union-attr]
    assert timer_seconds({}) == 1.0
    assert timer_seconds({"seconds": "2.5"}) == 2.5
    assert await call(registry, "std.sleep", seconds=0) is None
    assert await call(registry, "std.wait", seconds=0.0) is None
    for bad, why in [
        (-1, "must not be negative"),
        ("soon", "must be a number"),
        (True, "must be a number"),
        (float("nan"), "must be a number"),
        (86401, "at most 86400"),
    ]:
        assert why in str(await failure(registry, "std.wait", seconds=bad)), bad


async def test_notify_fires_an_event_and_says_how_many_were_told() -> None:
    fired: list[tuple[str, dict[str, Any]]] = []

    async def notify(event_type: str, traits: dict[str, Any]) -> int:
        fired.append((event_type, traits))
        return 3

    registry = builtin_actions(Toolbox(vim=MemoryVim([], []), notify=notify))
    told = await call(registry, "notify", event_type="maintenance.done", traits={"host": "c1"})
    assert told == {"told": 3}
    assert await call(registry, "notify", event_type="x") == {"told": 3}
    assert fired == [("maintenance.done", {"host": "c1"}), ("x", {})]
    assert "mapping" in str(await failure(registry, "notify", event_type="x", traits=[1]))
    bare = builtin_actions(Toolbox(vim=MemoryVim([], [])))
    assert "no notifier" in str(await failure(bare, "notify", event_type="x"))


# ----- std.http ---------------------------------------------------------------------------


async def test_http_get_returns_json_content_status_and_headers(
    actions: ActionRegistry, site: Site
) -> None:
    result = await call(actions, "std.http", url=site.url("/json"), params={"q": "a b"})
    assert result["status"] == 200 and result["content"] == {"ok": True, "n": 1}
    assert result["headers"]["content-type"].startswith("application/json")
    [request] = site.seen
    assert (request["method"], request["path"], request["query"]) == ("GET", "/json", {"q": "a b"})
    # Every call names its action execution, so a receiver can spot a repeat.
    assert request["headers"][ACTION_HEADER] == "act-1"

    text = await call(actions, "std.http", url=site.url("/text?x=1"), params={"y": 2})
    assert (text["content"], text["headers"]["x-answer"]) == ("plain words", "42")
    assert site.seen[-1]["query"] == {"x": "1", "y": "2"}


async def test_http_sends_json_text_headers_and_basic_auth(
    actions: ActionRegistry, site: Site
) -> None:
    await call(
        actions,
        "std.http",
        url=site.url("/in"),
        method="post",
        json={"a": 1},
        headers={"X-Mine": "yes", ACTION_HEADER: "forged"},
        auth="admin:s3cret",
        timeout=5,
    )
    sent = site.seen[-1]
    assert (sent["method"], sent["body"]) == ("POST", b'{"a":1}')
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["headers"]["X-Mine"] == "yes"
    assert sent["headers"][ACTION_HEADER] == "act-1"  # ours wins over the workflow's
    assert sent["headers"]["Authorization"] == "Basic YWRtaW46czNjcmV0"

    await call(actions, "std.http", url=site.url("/in"), method="PUT", body="raw text")
    assert (site.seen[-1]["method"], site.seen[-1]["body"]) == ("PUT", b"raw text")
    await call(actions, "std.http", url=site.url("/in"), method="PATCH", body={"b": 2})
    assert site.seen[-1]["body"] == b'{"b":2}'


async def test_http_errors_carry_the_answer_as_the_result(
    actions: ActionRegistry, site: Site
) -> None:
    missing = await failure(actions, "std.http", url=site.url("/missing"))
    assert "HTTP 404" in str(missing)
    assert missing.result["status"] == 404
    assert missing.result["content"] == {"error": "no such thing"}
    moved = await failure(actions, "std.http", url=site.url("/moved"))
    assert "redirects are not followed" in str(moved) and moved.result["status"] == 302
    assert [r["path"] for r in site.seen] == ["/missing", "/moved"]  # /json never asked
    # The answer is cut at the client's bound.
    assert len((await call(actions, "std.http", url=site.url("/big")))["content"]) == 1000


async def test_http_refuses_what_the_egress_policy_refuses_without_a_request(
    site: Site,
) -> None:
    http = HttpClient(egress=EgressPolicy())
    registry = builtin_actions(Toolbox(vim=MemoryVim([], []), http=http))
    try:
        metadata = await failure(
            registry, "std.http", url="http://169.254.169.254/latest/meta-data/"
        )
        assert "std.http refused" in str(metadata)
        assert "link-local address (cloud metadata answers there)" in str(metadata)
        loopback = await failure(registry, "std.http", url=site.url("/json"))
        assert "loopback address" in str(loopback)
        named = await failure(
            registry, "std.http", url=site.url("/json").replace("127.0.0.1", "localhost")
        )
        assert "loopback address" in str(named)
    finally:
        await http.close()
    assert site.seen == []


async def test_http_input_checks(actions: ActionRegistry, site: Site) -> None:
    url = site.url("/json")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"url": "ftp://x/y"}, "http or https URL"),
        ({"url": "file:///etc/passwd"}, "http or https URL"),
        ({"url": url, "method": "BREW"}, "method must be one of"),
        ({"url": url, "body": "a", "json": {}}, "body or json, not both"),
        ({"url": url, "body": 7}, "body must be text"),
        ({"url": url, "headers": ["a"]}, "headers must be a mapping"),
        ({"url": url, "auth": "nocolon"}, "user:password"),
        ({"url": url, "timeout": 0}, "more than 0"),
        ({"url": url, "timeout": 9999}, "at most 300"),
        ({"url": url, "allow_redirects": True}, "redirects are not followed"),
    ]
    for given, why in cases:
        assert why in str(await failure(actions, "std.http", **given)), given
    assert site.seen == []
    no_client = builtin_actions(Toolbox(vim=MemoryVim([], [])))
    assert "no HTTP client" in str(await failure(no_client, "std.http", url=url))
