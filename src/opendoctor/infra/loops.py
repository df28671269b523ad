"""Two event loops in one process: a loop of its own on a thread, and ASGI across loops.

Why: in embedded mode one loop ran everything, and during a storm the API waited for its
turns behind the delivery of thousands of callbacks (a `PUT /events` answered in 344 ms at
the median instead of 31 ms). A loop that only serves HTTP and takes events in
(`app/front.py`) gets the interpreter within one switch interval (5 ms) whatever the
other loop is busy with; the rest of the API runs where the service's state lives, each
ASGI message handed across (`bridged`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, TypeVar

T = TypeVar("T")

# ASGI's, as Starlette declares them.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's where installed (as `opendoctor serve` runs), asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on `loop` (another thread's) and wait here for what it returns or raises.
    Cancelling the wait cancels it there."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


class LoopThread:
    """An event loop running on a thread of its own until `stop`."""

    def __init__(self, name: str) -> None:
        self.loop = new_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            with contextlib.suppress(RuntimeError):
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def start(self) -> None:
        self._thread.start()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """`coro` on this thread's loop, awaited from the caller's."""
        return await on(self.loop, coro)

    def stop(self) -> None:
        """Stop the loop (what runs on it is abandoned) and wait for the thread to end."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()


async def bridged(
    app: Asgi, loop: asyncio.AbstractEventLoop, scope: Scope, receive: Receive, send: Send
) -> None:
    """Serve one ASGI call with `app` on `loop`, the server's `receive` and `send` staying
    on the caller's loop: each message crosses in one hand-over, so a stream, a lifespan or
    a client that goes away behave as they would on one loop."""
    here = asyncio.get_running_loop()

    async def receive_there() -> Message:
        return await on(here, _awaited(receive()))

    async def send_there(message: Message) -> None:
        await on(here, _awaited(send(message)))

    await on(loop, _awaited(app(scope, receive_there, send_there)))


async def _awaited(awaitable: Awaitable[T]) -> T:
    # run_coroutine_threadsafe takes coroutines only; ASGI callables return awaitables.
    return await awaitable
