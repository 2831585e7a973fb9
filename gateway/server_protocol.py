"""uvicorn's websockets-sansio protocol, slimmed for many idle sockets.

uvicorn builds, per WebSocket, an ``asyncio.Queue`` (four deques and an Event: about 2.5 KiB
while empty) for ASGI receive events, an ``asyncio.Event`` for write flow control, and keeps the
handshake's parsed request and response (headers included, about 3 KiB) for the socket's whole
life. A chat gateway holds tens of thousands of mostly idle sockets, so
:class:`SlimWebSocketProtocol` swaps in a single-consumer queue and a flag whose containers exist
only while something waits, and drops the handshake objects once the handshake is answered.
Behaviour is uvicorn's own: same events, same order, same flow control (docs/benchmarks.md,
"idle", has the measured effect).

:func:`protocol_class` returns the stock class when the installed uvicorn does not have the
attributes this relies on, so a uvicorn upgrade degrades memory, never correctness.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from shared.fastpaths import uvicorn_fast_path

#: ``ws=`` value for uvicorn when the slim protocol cannot be used.
STOCK_WS = "websockets-sansio"


class ReceiveQueue:
    """A FIFO of ASGI receive events with at most one waiting reader (uvicorn's ``receive``).

    Same surface as the ``asyncio.Queue`` it replaces: ``put_nowait``, ``get``, ``empty``,
    ``qsize``. Holds no deque while empty and no future while nobody waits.

    Raises:
        RuntimeError: from :meth:`get` when a second reader waits at the same time (ASGI allows
            one ``receive`` at a time per connection).
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        """Append ``item`` and wake the waiting reader, if any."""
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        """The oldest item, waiting for one if the queue is empty."""
        while not self._items:
            if self._waiter is not None:
                raise RuntimeError("ReceiveQueue allows one waiting reader")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items = self._items
        item = items.popleft()
        if not items:
            self._items = None
        return item

    def empty(self) -> bool:
        """True when no item is queued."""
        return not self._items

    def qsize(self) -> int:
        """Items queued."""
        return len(self._items) if self._items else 0


class WritableFlag:
    """``asyncio.Event`` semantics (``set``, ``clear``, ``is_set``, ``wait``) with waiters
    allocated only while the flag is clear and someone waits (a paused transport)."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        """True while writing is allowed."""
        return self._value

    def set(self) -> None:
        """Allow writing and wake every waiter."""
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        """Stop writing (the transport paused)."""
        self._value = False

    async def wait(self) -> bool:
        """Return True once the flag is set (at once if it is)."""
        if self._value:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


def protocol_class() -> Any:
    """The ``ws=`` argument for uvicorn: :class:`SlimWebSocketProtocol` when
    :func:`shared.fastpaths.uvicorn_fast_path` allows, else ``"websockets-sansio"``."""
    if not uvicorn_fast_path().enabled:
        return STOCK_WS
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:  # pragma: no cover - uvicorn < 0.35
        return STOCK_WS
    needed = ("send", "handle_connect", "receive", "send_receive_event_to_app")
    if not all(hasattr(WebSocketsSansIOProtocol, name) for name in needed):  # pragma: no cover
        return STOCK_WS

    class SlimWebSocketProtocol(WebSocketsSansIOProtocol):  # type: ignore[misc]
        """uvicorn's websockets-sansio protocol with a lighter queue and write flag, and
        without the handshake request/response kept after the handshake."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.queue = ReceiveQueue()
            writable = WritableFlag()
            writable.set()
            self.writable = writable

        async def send(self, message: Any) -> None:
            await super().send(message)
            if self.handshake_complete and getattr(self, "response", None) is not None:
                self.request = None
                self.response = None

    SlimWebSocketProtocol.__module__ = __name__
    return SlimWebSocketProtocol
