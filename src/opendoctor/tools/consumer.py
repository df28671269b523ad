"""The sample consumer: what a VNF manager's alarm endpoint does, minus the VNF manager.

It receives Aodh alarm callbacks (on `/failure`, or any POST path), records when each
arrived (T09), prints it, and answers 200. `GET /received` returns what it recorded;
redeliveries (same `x-openstack-request-id`) are not recorded twice: `GET /repeats`
lists their request ids, once per repeat. `GET /arrivals` is the raw log: every callback
as it came, repeats included, with its content type, request id and body untouched (what
a consumer's own parser would see; the contract tests read it).

With `--amqp URL` it also listens on a queue bound to an AMQP exchange, where
opendoctor publishes the same callbacks for `amqp://` alarm actions; those messages
are recorded the same way (the request id comes from the message's header).

In active/standby mode (`--lab-url`, pairs from `--pair` or `PUT /pairs`) a failure of
a pair's active server switches the pair over (`opendoctor.tools.switchover`); `GET
/switchovers` tells when each finished (T10).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from opendoctor.core.signing import SIGNATURE_HEADER, verify
from opendoctor.infra.procs import announce_ready, until_signalled
from opendoctor.lab.client import LabClient
from opendoctor.tools.switchover import Switcher

if TYPE_CHECKING:
    # Imported when --amqp is used: the consumer runs without the amqp extra otherwise.
    from opendoctor.infra.amqp import Broker, Delivery

RECEIVED: web.AppKey[list[dict[str, Any]]] = web.AppKey("received", list)
SEEN: web.AppKey[set[str]] = web.AppKey("seen", set)
REPEATS: web.AppKey[list[str]] = web.AppKey("repeats", list)
ARRIVALS: web.AppKey[list[dict[str, Any]]] = web.AppKey("arrivals", list)
QUIET: web.AppKey[bool] = web.AppKey("quiet", bool)
SIGNING_KEY: web.AppKey[bytes | None] = web.AppKey("signing_key")
# The project's key, to check each callback's X-OpenDoctor-Signature (off the command line).
SIGNING_KEY_ENV = "OPENDOCTOR_CONSUMER_SIGNING_KEY"
SWITCHER: web.AppKey[Switcher | None] = web.AppKey("switcher")
AMQP_HELP = (
    "also receive callbacks published to AMQP: "
    "amqp://user:pass@host:5672/[vhost]?exchange=NAME[&routing_key=BINDING_KEY][&queue=NAME]"
)


def summarize(body: dict[str, Any], arrived: float, request_id: str, path: str) -> dict[str, Any]:
    event = body.get("reason_data", {}).get("event", {})
    traits = {t[0]: t[2] for t in event.get("traits", []) if len(t) == 3}
    return {
        "arrived": arrived,
        "path": path,
        "request_id": request_id,
        "alarm_id": body.get("alarm_id"),
        "alarm_name": body.get("alarm_name"),
        "previous": body.get("previous"),
        "current": body.get("current"),
        "event_type": event.get("event_type"),
        "instance_id": traits.get("instance_id"),
        "state": traits.get("state"),
        "host": traits.get("host"),
        "project_id": traits.get("project_id") or traits.get("tenant_id"),
        "root_cause": body.get("reason_data", {}).get("root_cause"),
    }


def log_arrival(
    app: web.Application, body: Any, arrived: float, request_id: str, path: str, content_type: str
) -> None:
    """Keep one arrival as it came, before any interpretation."""
    app[ARRIVALS].append(
        {
            "arrived": arrived,
            "path": path,
            "request_id": request_id,
            "content_type": content_type,
            "body": body,
        }
    )


def record(
    app: web.Application, body: dict[str, Any], arrived: float, request_id: str, path: str
) -> dict[str, Any] | None:
    """Record one alarm callback, however it came (HTTP or AMQP); None for a redelivery."""
    if request_id and request_id in app[SEEN]:
        app[REPEATS].append(request_id)
        return None
    if request_id:
        app[SEEN].add(request_id)
    summary = summarize(body, arrived, request_id, path)
    app[RECEIVED].append(summary)
    switcher = app[SWITCHER]
    if switcher is not None and summary["current"] == "alarm":
        summary["switchover"] = switcher.on_failure(summary["instance_id"], arrived)
    if not app[QUIET]:
        print(
            f"T09 {time.strftime('%H:%M:%S', time.localtime(arrived))}"
            f".{int(arrived * 1000) % 1000:03d} alarm {summary['alarm_name']} "
            f"instance {summary['instance_id']} state {summary['state']} host {summary['host']}",
            flush=True,
        )
    return summary


def parse_body(data: bytes) -> dict[str, Any]:
    body = orjson.loads(data)
    if not isinstance(body, dict):
        raise ValueError("not an object")
    return body


async def _callback(request: web.Request) -> web.Response:
    arrived = time.time()
    data = await request.read()
    request_id = request.headers.get("x-openstack-request-id", "")
    content_type = request.headers.get("content-type", "")
    key = request.app[SIGNING_KEY]
    if key is not None:
        problem = verify(key, data, request.headers.get(SIGNATURE_HEADER), arrived)
        if problem is not None:
            print(f"refused a callback: {problem}", flush=True)
            return web.json_response({"error": problem}, status=401)
    try:
        body = parse_body(data)
    except ValueError as exc:
        text = data.decode(errors="replace")
        log_arrival(request.app, text, arrived, request_id, request.path, content_type)
        return web.json_response({"error": f"bad callback body: {exc}"}, status=400)
    log_arrival(request.app, body, arrived, request_id, request.path, content_type)
    if record(request.app, body, arrived, request_id, request.path) is None:
        return web.json_response({"duplicate": True})
    return web.json_response({"ok": True})


async def _received(request: web.Request) -> web.Response:
    # `since`: what came after the first N records only, for a bench that polls while a
    # storm arrives (the whole list, again and again, took this process's CPU from
    # the callbacks it measures).
    try:
        since = int(request.query.get("since", "0"))
    except ValueError:
        since = -1
    if since < 0:
        return web.json_response({"error": "since: a count of records, 0 or more"}, status=400)
    body = orjson.dumps(request.app[RECEIVED][since:])
    return web.Response(body=body, content_type="application/json")


async def _arrivals(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[ARRIVALS]), content_type="application/json")


async def _repeats(request: web.Request) -> web.Response:
    return web.json_response(request.app[REPEATS])


async def _reset(request: web.Request) -> web.Response:
    request.app[RECEIVED].clear()
    request.app[SEEN].clear()
    request.app[REPEATS].clear()
    request.app[ARRIVALS].clear()
    return web.json_response({"ok": True})


async def _switchovers(request: web.Request) -> web.Response:
    switcher = request.app[SWITCHER]
    return web.json_response(switcher.report() if switcher else [])


async def _set_pair(request: web.Request) -> web.Response:
    switcher = request.app[SWITCHER]
    if switcher is None:
        return web.json_response({"error": "start the consumer with --lab-url"}, status=409)
    try:
        body = orjson.loads(await request.read())
        active, standby = str(body["active"]), str(body["standby"])
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"error": f"expected {{active, standby}}: {exc}"}, status=400)
    switcher.set_pair(active, standby)
    return web.json_response({"pairs": switcher.pairs})


def make_app(
    quiet: bool = False, switcher: Switcher | None = None, signing_key: bytes | None = None
) -> web.Application:
    """With `signing_key`, a callback whose X-OpenDoctor-Signature does not hold is
    refused (401) and not recorded."""
    app = web.Application(client_max_size=1 << 20)
    app[SIGNING_KEY] = signing_key
    app[RECEIVED] = []
    app[SEEN] = set()
    app[REPEATS] = []
    app[ARRIVALS] = []
    app[QUIET] = quiet
    app[SWITCHER] = switcher
    app.router.add_get("/received", _received)
    app.router.add_delete("/received", _reset)
    app.router.add_get("/repeats", _repeats)
    app.router.add_get("/arrivals", _arrivals)
    app.router.add_get("/switchovers", _switchovers)
    app.router.add_put("/pairs", _set_pair)
    app.router.add_post("/{tail:.*}", _callback)
    return app


class AmqpListener:
    """Alarm callbacks published to an AMQP exchange, recorded exactly like HTTP ones.

    `url` is `amqp[s]://user:pass@host[:port]/[vhost]?exchange=X[&routing_key=K][&queue=Q]`:
    a queue bound to the (durable, topic) exchange X with binding key K (`#` by default).
    Without Q the queue is private and goes away with the consumer; with Q it is durable
    and keeps what arrives while the consumer is down.
    """

    def __init__(self, app: web.Application, url: str) -> None:
        from opendoctor.infra.amqpurl import parse_listen_url

        self.app = app
        self.target = parse_listen_url(url)
        self.queue = ""
        self._broker: Broker | None = None

    def describe(self) -> str:
        t = self.target
        return (
            f"{t.broker} exchange {t.exchange!r} binding key {t.routing_key!r} queue {self.queue!r}"
        )

    async def start(self) -> None:
        from opendoctor.infra.amqp import Broker

        t = self.target
        broker = self._broker = Broker(t.broker, name="opendoctor-consumer")
        await broker.declare_exchange(t.exchange, "topic")
        durable = t.queue is not None
        self.queue = await broker.declare_queue(
            t.queue, durable=durable, exclusive=not durable, bind=[(t.exchange, t.routing_key)]
        )
        await broker.consume(self.queue, self._on_message, prefetch=64)

    async def _on_message(self, delivery: Delivery) -> None:
        from opendoctor.infra.amqp import AmqpError

        arrived = time.time()
        request_id = delivery.header("x-openstack-request-id")
        where = f"amqp:{delivery.exchange}/{delivery.routing_key}"
        try:
            body = parse_body(delivery.body)
        except ValueError as exc:
            text = delivery.body.decode(errors="replace")
            log_arrival(self.app, text, arrived, request_id, where, delivery.content_type)
            print(f"dropped an AMQP message that is not a callback body: {exc}", flush=True)
            with contextlib.suppress(AmqpError):
                await delivery.reject()
            return
        log_arrival(self.app, body, arrived, request_id, where, delivery.content_type)
        record(self.app, body, arrived, request_id, where)
        # If the ack is lost the message comes again; its request id makes it a duplicate.
        with contextlib.suppress(AmqpError):
            await delivery.ack()

    async def close(self) -> None:
        if self._broker is not None:
            await self._broker.close()


async def serve(
    host: str,
    port: int,
    ready_file: Path | None,
    quiet: bool,
    lab_url: str | None = None,
    pairs: dict[str, str] | None = None,
    amqp: str | None = None,
) -> None:
    switcher = Switcher(LabClient(lab_url), pairs) if lab_url else None
    key = os.environ.get(SIGNING_KEY_ENV)
    app = make_app(quiet, switcher, key.encode() if key else None)
    listener = None
    if amqp is not None:
        try:
            listener = AmqpListener(app, amqp)
            await listener.start()
        except Exception as exc:  # a bad URL (ValueError) or an unreachable broker
            if listener is not None:
                await listener.close()
            if switcher is not None:
                await switcher.close()
            raise SystemExit(f"consumer: cannot listen on AMQP: {exc}") from None
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    url = f"http://{host}:{bound}"
    print(f"consumer listening on {url} (callbacks on {url}/failure)", flush=True)
    if listener is not None:
        print(f"consumer listening on AMQP: {listener.describe()}", flush=True)
    announce_ready(ready_file, url)
    await until_signalled()
    if listener is not None:
        await listener.close()
    await runner.cleanup()
    if switcher is not None:
        await switcher.close()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="opendoctor-consumer")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--lab-url", help="switch active/standby pairs over through this lab")
    parser.add_argument("--pair", action="append", default=[], help="ACTIVE_ID=STANDBY_ID")
    parser.add_argument("--amqp", help=AMQP_HELP)
    args = parser.parse_args(argv)
    asyncio.run(
        serve(
            args.host,
            args.port,
            args.ready_file,
            args.quiet,
            args.lab_url,
            parse_pairs(args.pair),
            args.amqp,
        )
    )


def parse_pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        active, sep, standby = item.partition("=")
        if not sep or not active or not standby:
            raise SystemExit(f"--pair takes ACTIVE_ID=STANDBY_ID, not {item!r}")
        pairs[active] = standby
    return pairs


if __name__ == "__main__":
    main(sys.argv[1:])
