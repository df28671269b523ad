"""Delivering outbox entries to consumers: first attempts at once, retries with backoff.

`Sender` (a port, in `core.ports`) is the plug-in point, one per URL scheme.
`Dispatcher` owns the attempts: it sends with bounded concurrency, writes each
attempt's outcome back to the outbox and keeps a retry loop that wakes when the next
pending entry is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import orjson

from opendoctor.core.notifications import DELIVERED, FAILED, PENDING, OutboxEntry
from opendoctor.core.ports import DeliveryError, Sender
from opendoctor.core.redact import redact
from opendoctor.core.settings import NotifierSettings
from opendoctor.infra import metrics
from opendoctor.infra.httpclient import EgressRefused, HttpError, Requester
from opendoctor.infra.memo import Remembered
from opendoctor.store.db import unavailable
from opendoctor.store.outbox import OutboxStore

log = logging.getLogger(__name__)

# Answers worth trying again: the consumer may be back soon. Other 4xx are final.
RETRYABLE = {408, 425, 429}


# The headers that sign an entry's payload (none where its project has no key).
Signer = Callable[[OutboxEntry, bytes], dict[str, str]]


def unsigned(_: OutboxEntry, __: bytes) -> dict[str, str]:
    return {}


# The outcomes' counters, looked up once rather than by label at every attempt.
_DELIVERED = metrics.NOTIFICATIONS.labels("delivered")
_RETRY = metrics.NOTIFICATIONS.labels("retry")
_FAILED = metrics.NOTIFICATIONS.labels("failed")


class HttpSender:
    """POSTs the Aodh callback body, as Aodh's REST notifier does."""

    def __init__(self, http: Requester, timeout: float, signer: Signer = unsigned) -> None:
        self.http = http
        self.timeout = timeout
        self.signer = signer

    async def send(self, entry: OutboxEntry) -> None:
        payload = entry.payload or orjson.dumps(entry.body)
        headers = {
            "content-type": "application/json",
            # Stable per entry: a retried delivery carries the same id, so consumers can dedupe.
            "x-openstack-request-id": f"req-{entry.id}",
        }
        signature = self.signer(entry, payload)
        if signature:
            headers.update(signature)
        try:
            resp = await self.http.request(
                "POST", entry.url, content=payload, headers=headers, timeout=self.timeout
            )
        except EgressRefused as exc:
            raise DeliveryError(str(exc), retry=False) from exc
        except HttpError as exc:
            raise DeliveryError(str(exc)) from exc
        if 300 <= resp.status < 400:
            problem = f"HTTP {resp.status} from {entry.url}: redirects are not followed"
            raise DeliveryError(problem, retry=False)
        if not resp.ok:
            retry = resp.status >= 500 or resp.status in RETRYABLE
            raise DeliveryError(f"HTTP {resp.status} from {entry.url}", retry=retry)


class LogSender:
    """`log://` actions: the notification goes to opendoctor's own log."""

    async def send(self, entry: OutboxEntry) -> None:
        log.info("alarm notification", extra={"alarm_id": entry.alarm_id, "body": entry.body})


# Whose an entry is (its alarm's project), for the project's share of the connections.
ProjectOf = Callable[[OutboxEntry], str]


def one_project(_: OutboxEntry) -> str:
    return ""


def _slot(shares: dict[str, asyncio.Semaphore], key: str, size: int) -> asyncio.Semaphore:
    """`key`'s share in `shares`, made on first use."""
    share = shares.get(key)
    if share is None:
        share = shares[key] = asyncio.Semaphore(size)
    return share


class Dispatcher:
    def __init__(
        self,
        outbox: OutboxStore,
        senders: dict[str, Sender],
        settings: NotifierSettings,
        project_of: ProjectOf = one_project,
    ) -> None:
        self.outbox = outbox
        self.senders = senders
        self.settings = settings
        self.project_of = project_of
        self._limit = asyncio.Semaphore(settings.connections)
        # A share of the connections per consumer and per project, each a queue of its
        # own (a semaphore's waiters): one tenant's consumers, however many and however
        # slow, take only the project's share. Their number is bounded by the alarms
        # there may be, and each costs one small semaphore.
        self._shares: dict[str, asyncio.Semaphore] = {}
        self._projects: dict[str, asyncio.Semaphore] = {}
        # URL -> its sender and its consumer's share: worked out once per action URL
        # (their number is bounded as the alarms are), not at every attempt.
        self._route: Remembered[str, tuple[Sender | None, asyncio.Semaphore]] = Remembered(
            lambda url: (self._sender(url), self._share(url))
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _sender(self, url: str) -> Sender | None:
        scheme = url.split(":", 1)[0].lower()
        return self.senders.get(scheme)

    def _share(self, url: str) -> asyncio.Semaphore:
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc.rpartition('@')[2].lower()}"
        return _slot(self._shares, key, self.settings.per_destination)

    def _project_share(self, entry: OutboxEntry) -> asyncio.Semaphore:
        return _slot(self._projects, self.project_of(entry), self.settings.per_project)

    async def _attempt(self, entry: OutboxEntry) -> None:
        sender, share = self._route(entry.url)
        entry.attempts += 1
        try:
            if sender is None:
                raise DeliveryError(f"no sender for {entry.url}", retry=False)
            async with self._project_share(entry), share, self._limit:
                try:
                    await sender.send(entry)
                except DeliveryError:
                    raise
                except Exception as exc:
                    # A sender's own bug must not leave the entry untried for good: it
                    # is retried as any failure is, and the log has the traceback.
                    log.exception("notification sender failed", extra={"url": entry.url})
                    raise DeliveryError(f"{exc.__class__.__name__}: {exc}") from exc
        except DeliveryError as exc:
            entry.last_error = redact(str(exc))  # shown by the API, to admins
            if exc.retry and entry.attempts < self.settings.max_attempts:
                delay = min(
                    self.settings.backoff_max,
                    self.settings.backoff_initial * 2 ** (entry.attempts - 1),
                )
                entry.next_attempt = time.time() + delay
                entry.status = PENDING
                _RETRY.inc()
            else:
                entry.status = FAILED
                _FAILED.inc()
                log.error(
                    "notification failed for good",
                    extra={"url": entry.url, "alarm_id": entry.alarm_id, "error": str(exc)},
                )
        else:
            entry.status = DELIVERED
            entry.delivered = time.time()
            entry.last_error = None
            _DELIVERED.inc()

    def first_attempts(self, entries: list[OutboxEntry]) -> list[asyncio.Task[None]]:
        """Start trying every new entry once, all at once; each entry records its own
        outcome. One task per entry, in order."""
        return [asyncio.ensure_future(self._attempt(e)) for e in entries]

    @property
    def claim_seconds(self) -> float:
        """How long an entry being tried is left alone by the other processes' retries."""
        return 2 * self.settings.timeout + 5.0

    def wake(self) -> None:
        """Entries that need a retry were just stored: look at the outbox again."""
        self._wake.set()

    async def run_retries(self) -> None:
        """Retry pending entries when due; runs for the life of the service."""
        while True:
            # Cleared before looking, so a wake-up during the pass is not lost.
            self._wake.clear()
            now = time.time()
            try:
                # Claimed for a while: other processes on the database leave these be.
                claim = now + self.claim_seconds
                due = await self.outbox.claim_due(now, claim)
                if due:
                    await asyncio.gather(*(self._attempt(e) for e in due))
                    await self.outbox.record_attempts(due)
                    continue
                nxt = await self.outbox.next_due()
            except Exception as exc:
                if unavailable(exc):
                    # Expected while the database restarts: one line a pass, no traceback.
                    log.warning("outbox retry pass skipped", extra={"error": str(exc)})
                else:
                    log.exception("outbox retry pass failed")
                nxt = now + 1.0
            wait = 5.0 if nxt is None else max(0.0, min(5.0, nxt - time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run_retries(), name="outbox-retries")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
