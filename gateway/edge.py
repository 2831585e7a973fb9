"""Limits at the edge, before any request reaches natter's code (issue 10, item 7; OWASP Denial
of Service Cheat Sheet).

* :func:`http_protocol_class`: uvicorn's httptools protocol with a **header deadline**: a
  connection must deliver each request's complete headers (the WebSocket handshake included)
  within ``header_timeout`` seconds of connecting or of the request's first byte, else it is
  closed. uvicorn itself only times out idle keep-alive connections, so a client trickling a
  handshake one byte at a time ("slowloris") held a connection forever.
  The same protocol **lingers** after a response that went out before its request's body was
  read (a 413): it reads and discards the rest of the body, for up to ``linger_seconds`` (then
  it closes), and keeps the connection for the next request. Closing at once would make the
  kernel answer the unread bytes with a reset, and a client that sends its whole body before
  reading (httpx, browsers' ``fetch``) would see a broken connection instead of the 413
  (nginx's ``lingering_close``, RFC 9112 section 9.6).
* :class:`BodyLimit`: an ASGI middleware that reads each HTTP request body before the route
  does, at most ``max_bytes`` (413 as soon as more arrive or ``Content-Length`` announces more,
  without keeping the rest) and within ``timeout`` seconds (408), then hands the route the
  buffered body. Routes listed in ``limits`` get their own maximum.
* :class:`PendingSockets`: how many sockets are connected but not yet authenticated, in all and
  per client address; a gateway refuses a new one beyond either cap, so unauthenticated
  sockets can neither fill ``max_connections`` nor be hoarded by one address.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import HTTP_STATUS, ErrorCode, ProtocolError

logger = logging.getLogger(__name__)

#: ``http=`` value for uvicorn when the deadline protocol cannot be built.
STOCK_HTTP: Final = "httptools"
#: The uvicorn ``HttpToolsProtocol`` methods the edge protocol extends.
_HOOKS: Final = (
    "connection_made",
    "on_message_begin",
    "on_headers_complete",
    "on_message_complete",
    "on_response_complete",
    "connection_lost",
)


def _httptools_protocol() -> type[Any] | None:
    """uvicorn's ``HttpToolsProtocol`` if it has every hook the edge protocol extends."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - uvicorn without httptools
        return None
    if not all(callable(getattr(HttpToolsProtocol, hook, None)) for hook in _HOOKS):
        return None
    return HttpToolsProtocol


def lingers() -> bool:
    """True when :func:`http_protocol_class` builds the lingering protocol, so a refusal may
    leave the connection open for it (else the refusal closes the connection at once)."""
    return _httptools_protocol() is not None


def http_protocol_class(header_timeout: float, linger_seconds: float) -> type[Any] | str:
    """uvicorn's ``HttpToolsProtocol`` with the header deadline and the linger after an early
    answer (module docstring; both in seconds; the gateway lingers for its body timeout, 30 s
    by default like nginx's ``lingering_time``), or ``"httptools"`` (logged) when the installed
    uvicorn lacks the hooks they rely on (:data:`_HOOKS`)."""
    base = _httptools_protocol()
    if base is None:
        logger.warning("uvicorn's httptools protocol is missing or changed: no header deadline, no linger")
        return STOCK_HTTP

    class HeaderDeadlineProtocol(base):  # type: ignore[misc,valid-type]
        """Closes the connection when a request's headers are not complete in time, and
        drains a refused request's body before closing."""

        deadline_seconds = header_timeout
        linger_for = linger_seconds

        def connection_made(self, transport: Any) -> None:
            self._natter_deadline: asyncio.TimerHandle | None = None
            self._natter_linger: asyncio.TimerHandle | None = None
            super().connection_made(transport)
            self._natter_arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            cycle = getattr(self, "cycle", None)
            if getattr(cycle, "more_body", False) and not self.transport.is_closing():
                # answered before the body was read: uvicorn discards the rest as it arrives
                self._natter_linger = self.loop.call_later(self.linger_for, self._natter_end_linger)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            if self._natter_linger is not None:
                # The refused body is all read, so the connection is as good as any kept-alive
                # one (the answer did not say ``Connection: close``): the next request's headers
                # get the usual deadline, which also ends the connection if none comes.
                self._natter_linger.cancel()
                self._natter_linger = None
                self._natter_arm()

        def _natter_end_linger(self) -> None:
            self._natter_linger = None
            if not self.transport.is_closing():
                logger.info("closing a connection whose refused body went on past %.0fs", self.linger_for)
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._natter_arm()

        def on_headers_complete(self) -> None:
            self._natter_disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._natter_disarm()
            if self._natter_linger is not None:
                self._natter_linger.cancel()
                self._natter_linger = None
            super().connection_lost(exc)

        def _natter_arm(self) -> None:
            if self._natter_deadline is None:  # the first byte's deadline is never extended
                self._natter_deadline = self.loop.call_later(self.deadline_seconds, self._natter_expire)

        def _natter_disarm(self) -> None:
            if self._natter_deadline is not None:
                self._natter_deadline.cancel()
                self._natter_deadline = None

        def _natter_expire(self) -> None:
            self._natter_deadline = None
            if not self.transport.is_closing():
                logger.info(
                    "closing a connection whose headers did not arrive within %.0fs", self.deadline_seconds
                )
                self.transport.close()

    return HeaderDeadlineProtocol


class BodyLimit:
    """Read every HTTP request body up front, bounded in size and time (module docstring).

    Args:
        app: the FastAPI app.
        max_bytes: largest body for routes not in ``limits`` (bytes).
        timeout: seconds the whole body may take to arrive.
        limits: path prefix -> its own maximum (e.g. uploads), checked in order.
        linger: the server's protocol lingers after an early answer (:func:`lingers`): a 413
            then leaves closing to it, so the client reads the answer, not a reset.

    Answers ``413`` ``{"detail","code":"payload_too_large"}`` (with ``Connection: close``
    unless ``linger``) or ``408`` ``{"detail","code":"request_timeout"}`` (with
    ``Connection: close``); never calls the route then.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        timeout: float,
        limits: Mapping[str, int] | None = None,
        streamed: Callable[[str], int | None] | None = None,
        linger: bool = False,
    ) -> None:
        self.app = app
        self.linger = linger
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.limits = dict(limits or {})
        #: path -> the limit of a route that reads its body as a stream (uploads), else None
        self.streamed = streamed

    def limit_for(self, path: str) -> int:
        """The body limit of ``path`` in bytes."""
        for prefix, limit in self.limits.items():
            if path.startswith(prefix):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stream_limit = self.streamed(scope.get("path", "")) if self.streamed is not None else None
        limit = stream_limit if stream_limit is not None else self.limit_for(scope.get("path", ""))
        announced = _content_length(scope)
        if announced is not None and announced > limit:
            await self._too_large(send, limit)
            return
        if stream_limit is not None:
            await self._streamed(scope, receive, send, stream_limit)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # the client went away
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        await self._too_large(send, limit)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _refuse(
                send, ErrorCode.REQUEST_TIMEOUT, f"Request body not received within {self.timeout:g}s"
            )
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send, limit: int) -> None:
        """413; the connection stays open for the protocol's linger when it has one."""
        too_large = f"Request body larger than {limit} bytes"
        await _refuse(send, ErrorCode.PAYLOAD_TOO_LARGE, too_large, close=not self.linger)

    async def _streamed(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Hand the route its body as it arrives, counting: past ``limit`` bytes (or after the
        timeout) the route's next read raises ``ProtocolError`` ``payload_too_large``
        (``request_timeout``), which the app answers 413 (408) like any protocol error; the rest
        of the body is never read."""
        size = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout

        async def counted() -> Message:
            nonlocal size
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    message = await receive()
            except TimeoutError:
                detail = f"Request body not received within {self.timeout:g}s"
                raise ProtocolError(ErrorCode.REQUEST_TIMEOUT, detail) from None
            size += len(message.get("body", b""))
            if size > limit:
                raise ProtocolError(ErrorCode.PAYLOAD_TOO_LARGE, f"Request body larger than {limit} bytes")
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, code: ErrorCode, detail: str, *, close: bool = True) -> None:
    body = json.dumps({"detail": detail, "code": code.value}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": HTTP_STATUS[code], "headers": headers})
    await send({"type": "http.response.body", "body": body})


class PendingSockets:
    """Sockets accepted but not authenticated yet, per client address and in all.

    Args:
        per_address: at most this many from one address.
        total: at most this many on this gateway.
    """

    __slots__ = ("by_address", "count", "per_address", "total")

    def __init__(self, *, per_address: int, total: int) -> None:
        self.per_address = per_address
        self.total = total
        self.by_address: dict[str, int] = {}
        self.count = 0

    def admit(self, address: str) -> bool:
        """Count one more pending socket from ``address``; False (nothing counted) over a cap."""
        held = self.by_address.get(address, 0)
        if held >= self.per_address or self.count >= self.total:
            return False
        self.by_address[address] = held + 1
        self.count += 1
        return True

    def release(self, address: str) -> None:
        """One pending socket of ``address`` authenticated or went away."""
        held = self.by_address.get(address, 0)
        if held <= 0:
            return
        if held == 1:
            del self.by_address[address]
        else:
            self.by_address[address] = held - 1
        self.count -= 1
