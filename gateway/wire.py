"""WebSocket frames built once per message and written straight to each socket's transport.

A relayed frame is the same bytes for every recipient, so natter builds its RFC 6455 frame once
(section 5.2: FIN + opcode 0x1, unmasked server payload length in 7, 16 or 64 bits) and hands the
same ``bytes`` object to every socket, as centrifuge's ``broadcastPublication`` does with
publication bytes. Writing those bytes to a socket is one non-blocking ``transport.write``.

This needs the server's own connection object: :class:`gateway.app.GatewayApp` (the outer ASGI
layer) records uvicorn's ``send`` callable in the scope, and :func:`direct_sink` recognises uvicorn's
websockets-sansio protocol behind it, when :func:`shared.fastpaths.uvicorn_fast_path` allows.
Otherwise (another server, an unverified uvicorn, ``NATTER_FAST_PATHS=off``) the gateway uses the
ASGI ``send_text`` path with the same ordering and queue limits.
"""

from __future__ import annotations

import struct
from typing import Any

from starlette.types import Scope

from shared.fastpaths import uvicorn_fast_path

RAW_SEND_KEY = "natter.raw_send"

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import (
        WebSocketsSansIOProtocol as _SANSIO_PROTOCOL,
    )
except ImportError:  # pragma: no cover - uvicorn < 0.35
    _SANSIO_PROTOCOL = None


class Outbound:
    """One outgoing text message: its UTF-8 payload and, built on first use, its wire frame.

    One instance is shared by every recipient of a fan-out.
    """

    __slots__ = ("_wire", "payload")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self._wire: bytes | None = None

    @property
    def wire(self) -> bytes:
        """The complete unmasked text frame (RFC 6455 section 5.2)."""
        if self._wire is None:
            self._wire = text_frame(self.payload)
        return self._wire

    @property
    def text(self) -> str:
        return self.payload.decode()


def text_frame(payload: bytes) -> bytes:
    """An unfragmented, unmasked text frame carrying ``payload`` (RFC 6455 section 5.2)."""
    length = len(payload)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 1 << 16:
        header = b"\x81\x7e" + struct.pack("!H", length)
    else:
        header = b"\x81\x7f" + struct.pack("!Q", length)
    return header + payload


class DirectSink:
    """Non-blocking writes of prebuilt frames to one uvicorn websockets-sansio connection.

    The bound methods used per delivery are looked up once here (this is the fan-out hot path).
    """

    __slots__ = ("_is_closing", "_writable", "protocol", "transport", "write")

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self.write = protocol.transport.write
        self._writable = protocol.writable.is_set
        self._is_closing = protocol.transport.is_closing

    def ready(self) -> bool:
        """True when a frame may be written now: open, and the transport is not paused.

        A closing transport is the common signal; ``close_sent`` / ``disconnected`` are read
        only when the transport still looks open.
        """
        if not self._writable() or self._is_closing():
            return False
        protocol = self.protocol
        return not (protocol.close_sent or protocol.disconnected)

    def gone(self) -> bool:
        """True once the socket is closing or closed (nothing more can be written)."""
        return bool(self.protocol.close_sent or self.protocol.disconnected or self.transport.is_closing())

    async def wait_writable(self) -> None:
        await self.protocol.writable.wait()

    def abort_if_open(self) -> None:
        """Drop the TCP connection if the close handshake has not finished.

        A client that stopped reading never receives our close frame (it waits behind megabytes
        of unsent data), and ``transport.close()`` waits for that buffer to drain forever; so a
        slow socket is aborted (RST) a few seconds after its 1013 close was queued.
        """
        if not self.protocol.disconnected:
            self.transport.abort()


def direct_sink(scope: Scope) -> DirectSink | None:
    """The :class:`DirectSink` for this WebSocket scope, or None if the server is not uvicorn's
    websockets-sansio protocol or the uvicorn fast path is off (then frames go through ASGI
    ``send``)."""
    if not uvicorn_fast_path().enabled:
        return None
    send = scope.get(RAW_SEND_KEY)
    protocol = getattr(send, "__self__", None)
    if protocol is None:
        return None
    needed = ("transport", "writable", "close_sent", "disconnected", "conn")
    if not all(hasattr(protocol, name) for name in needed):
        return None
    if _SANSIO_PROTOCOL is None or not isinstance(protocol, _SANSIO_PROTOCOL):
        return None
    if getattr(protocol.conn, "extensions", None):  # per-message-deflate: frames differ per socket
        return None
    return DirectSink(protocol)
