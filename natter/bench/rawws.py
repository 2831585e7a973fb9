"""A minimal RFC 6455 WebSocket client for the load generator, as an :class:`asyncio.Protocol`.

Why not the ``websockets`` library: its asyncio client costs ~40 us of CPU per received frame
(a reader task per socket, an ``await`` and a queue hop per frame, a ``str`` decode); the load
generator runs on the same 2 cores as the server it measures, so every microsecond it spends is
taken from the server. Here a received chunk is parsed in ``data_received`` with no task, no
``await`` and no decoding: data frames are handed to the listener as ``bytes``.

What it does (and the RFC 6455 sections it follows):

- Opening handshake (4.1, 4.2.2): ``GET path?query HTTP/1.1`` with ``Host``, ``Upgrade:
  websocket``, ``Connection: Upgrade``, a random 16-byte base64 ``Sec-WebSocket-Key`` and
  ``Sec-WebSocket-Version: 13``; no extension is offered (so no compression). The answer must be
  status 101 with ``Sec-WebSocket-Accept`` = base64(sha1(key + GUID)) and no extension; anything
  else fails the open with a short reason (``"http 403"``, ``"bad accept"``).
- Framing (5.2): server frames must be unmasked and carry no RSV bit; 7/16/64-bit lengths;
  fragmented messages are reassembled (control frames may interleave, 5.4); a message over
  ``max_size`` bytes fails the connection with 1009, a protocol violation with 1002. Text is not
  checked for valid UTF-8 (the listener works on bytes).
- Client frames are masked (5.3) with a fresh ``os.urandom(4)`` key per frame, through
  ``websockets.speedups.apply_mask`` when it is importable, else a pure-Python XOR.
- Control frames (5.5): a ping is answered at once with a pong carrying the same payload; pongs are
  ignored; a close frame is answered once with a close frame echoing its code, then the transport
  is closed. The listener hears about a close it did not start (:meth:`Listener.ws_closed`: the
  server's code, 1005 for a close frame without one, 1006 for a connection lost without a close
  frame), once.
- Closing handshake (7.1): :meth:`RawWebSocket.close` sends close 1000 once and waits (bounded)
  for the server to finish the handshake; on timeout the transport is aborted.
- Backpressure: :meth:`RawWebSocket.send_text` awaits while the transport has paused writing.

Receive timestamp: ``time.time_ns()`` is read once per ``data_received`` call and passed with
every frame parsed from that chunk: it is the moment the bytes reached the process, not the
moment each frame was looked at (the frames of one chunk arrived together). Latencies measured
with it do not include the client's own parsing time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Callable
from time import time_ns as _time_ns
from typing import Protocol, cast
from urllib.parse import urlsplit

#: RFC 6455 section 1.3: appended to the key before hashing for ``Sec-WebSocket-Accept``.
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Opcodes (RFC 6455 section 5.2).
OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
#: Close codes used here (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_TOO_BIG = 1009
#: The largest response head accepted during the handshake, in bytes.
MAX_HEAD = 16384


def _py_apply_mask(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` repeated (RFC 6455 section 5.3), in pure Python."""
    length = len(data)
    if not length:
        return b""
    repeated = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")


def _load_apply_mask() -> Callable[[bytes, bytes], bytes]:
    try:
        from websockets.speedups import apply_mask as fast  # C implementation
    except ImportError:  # pragma: no cover - websockets ships its speedups as a wheel here
        return _py_apply_mask
    return fast


#: ``apply_mask(data, key) -> bytes``: websockets' C speedup when importable, else pure Python.
apply_mask = _load_apply_mask()


class FrameError(Exception):
    """The peer broke RFC 6455 framing; ``code`` is the close code to fail the connection with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class HandshakeError(Exception):
    """The opening handshake failed; the text is a short reason (``"http 403"``, ``"bad accept"``)."""


def new_key() -> str:
    """A random ``Sec-WebSocket-Key``: 16 random bytes in base64 (RFC 6455 section 4.1)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_for(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key`` (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WS_GUID).digest()).decode("ascii")


def handshake_request(host: str, port: int, target: str, key: str) -> bytes:
    """The HTTP/1.1 Upgrade request for ``target`` (path and query), offering no extension."""
    return (
        f"GET {target} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n"
    ).encode("ascii")


def check_handshake_response(head: bytes, key: str) -> None:
    """Check a response head (without the final blank line) against the request's ``key``.

    Raises:
        HandshakeError: not status 101 (``"http <status>"``), a wrong or missing
            ``Sec-WebSocket-Accept`` (``"bad accept"``), an extension that was not offered
            (``"unrequested extension"``), or an unreadable head (``"bad response"``).
    """
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise HandshakeError("bad response")
    if parts[1] != "101":
        raise HandshakeError(f"http {parts[1][:3]}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get("sec-websocket-accept") != accept_for(key):
        raise HandshakeError("bad accept")
    if headers.get("sec-websocket-extensions"):
        raise HandshakeError("unrequested extension")


def client_frame(opcode: int, payload: bytes, mask_key: bytes | None = None) -> bytes:
    """One final client frame (FIN set) of ``opcode``, masked with ``mask_key`` (4 bytes; a fresh
    ``os.urandom(4)`` when None), RFC 6455 sections 5.2 and 5.3."""
    key = os.urandom(4) if mask_key is None else mask_key
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, 0xFE)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + length.to_bytes(8, "big")
    return head + key + apply_mask(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    """The body of a close frame: the 2-byte code, then the UTF-8 reason (RFC 6455 section 5.5.1)."""
    return code.to_bytes(2, "big") + reason.encode("utf-8")


def parse_close(payload: bytes) -> int:
    """The status code of a received close frame's body; 1005 when it has none (RFC 6455 7.1.5).

    Raises:
        FrameError: a 1-byte body (1002).
    """
    if not payload:
        return CLOSE_NO_STATUS
    if len(payload) < 2:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "close frame of 1 byte")
    return int.from_bytes(payload[:2], "big")


class FrameParser:
    """Splits the server's byte stream into messages and control frames (RFC 6455 section 5).

    :meth:`feed` takes any chunk and returns ``[(opcode, payload), ...]`` for every complete
    message (text/binary, fragments reassembled, under the first fragment's opcode) and control
    frame, in arrival order; an incomplete tail is kept for the next chunk. Payloads are ``bytes``.
    A chunk that holds whole frames is parsed without copying it into the buffer.
    """

    def __init__(self, max_size: int = 2**20) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._frag_op = -1
        self._frags: list[bytes] = []
        self._frag_size = 0

    @property
    def idle(self) -> bool:
        """Nothing is buffered and no fragmented message is pending."""
        return not self._buf and self._frag_op < 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Parse ``data`` after what is buffered.

        Raises:
            FrameError: a masked server frame, an RSV bit, a bad or fragmented control frame, a
                continuation out of place, an unknown opcode (1002), or a message larger than
                ``max_size`` (1009). The parser is unusable afterwards.
        """
        buf = self._buf
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(view)
        while end - pos >= 2:
            b0 = view[pos]
            b1 = view[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                if end - pos < 4:
                    break
                length = int.from_bytes(view[start : start + 2], "big")
                start += 2
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(view[start : start + 8], "big")
                start += 8
            if b1 & 0x80:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "masked server frame")
            if b0 & 0x70:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "reserved bit set")
            if length > self.max_size:
                raise FrameError(CLOSE_TOO_BIG, "frame too big")
            stop = start + length
            if stop > end:
                break
            payload = bytes(view[start:stop])
            pos = stop
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode == OP_TEXT or opcode == OP_BINARY:
                if self._frag_op >= 0:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
                if fin:
                    out.append((opcode, payload))
                else:
                    self._frag_op = opcode
                    self._frags = [payload]
                    self._frag_size = length
            elif opcode >= 0x8:
                if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
                    raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
                if not fin or length > 125:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "bad control frame")
                out.append((opcode, payload))
            elif opcode == OP_CONTINUATION:
                if self._frag_op < 0:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "continuation without a message")
                self._frag_size += length
                if self._frag_size > self.max_size:
                    raise FrameError(CLOSE_TOO_BIG, "message too big")
                self._frags.append(payload)
                if fin:
                    out.append((self._frag_op, b"".join(self._frags)))
                    self._frag_op = -1
                    self._frags = []
                    self._frag_size = 0
            else:
                raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if view is buf:
            del buf[:pos]
        elif pos < end:
            buf += view[pos:]
        return out


class Listener(Protocol):
    """What a :class:`RawWebSocket` reports to (called from ``data_received``; must not block).

    ``now_ns`` is the ``time.time_ns()`` of the chunk the frame came in (see the module docstring).
    """

    def ws_text(self, payload: bytes, now_ns: int) -> None: ...

    def ws_binary(self, payload: bytes, now_ns: int) -> None: ...

    def ws_closed(self, code: int) -> None: ...


class RawWebSocket(asyncio.Protocol):
    """One client WebSocket connection; open it with :func:`connect`.

    States: handshake -> open -> closing (a close frame was sent) -> closed (transport lost).
    """

    __slots__ = (
        "_drain",
        "_fast",
        "_fast_ok",
        "_handshaking",
        "_head",
        "_on_text",
        "_parser",
        "_reported",
        "_request",
        "_request_key",
        "_was_open",
        "_we_closed",
        "close_code",
        "close_received",
        "close_sent",
        "listener",
        "lost",
        "opened",
        "transport",
    )

    def __init__(self, listener: Listener, host: str, port: int, target: str, max_size: int) -> None:
        self.listener = listener
        self._request_key = new_key()
        self._request = handshake_request(host, port, target, self._request_key)
        self._parser = FrameParser(max_size)
        self._on_text = listener.ws_text
        #: True when data_received may try the one-frame fast path (see there); frames of up to
        #: 65535 bytes take it, so only when max_size allows them.
        self._fast = False
        self._fast_ok = max_size >= 65535
        self._head = bytearray()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self._handshaking = True
        self._was_open = False
        self.close_sent = False
        self.close_received = False
        self.close_code: int | None = None
        self._we_closed = False
        self._reported = False
        self._drain: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now_ns = _time_ns()
        if self._fast and data[0] == 0x81:
            # The common case: the chunk is exactly one final unmasked text frame, nothing is
            # buffered and no fragmented message is pending (0x81: FIN, no RSV bit, text).
            length = data[1]
            if length < 126:
                if length + 2 == len(data):
                    self._on_text(data[2:], now_ns)
                    return
            elif length == 126 and len(data) == ((data[2] << 8) | data[3]) + 4:
                self._on_text(data[4:], now_ns)
                return
        if self._handshaking:
            rest = self._handshake_data(data)
            if rest is None:
                return
            data = rest
        parser = self._parser
        try:
            frames = parser.feed(data)
        except FrameError as error:
            self._fast = False
            self._fail(error.code, error.reason)
            return
        self._fast = self._fast_ok and parser.idle
        listener = self.listener
        for opcode, payload in frames:
            if opcode == OP_TEXT:
                listener.ws_text(payload, now_ns)
            elif opcode == OP_BINARY:
                listener.ws_binary(payload, now_ns)
            elif opcode == OP_PING:
                self._write(client_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                self._on_close_frame(payload)
                return
            # OP_PONG: ignored (we send no pings)

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._handshaking = False
        self._fail_open(HandshakeError("closed during handshake"))
        if not self.lost.done():
            self.lost.set_result(None)
        self.resume_writing()
        if self.close_code is None:
            self.close_code = CLOSE_ABNORMAL
        self._report()

    # --- handshake ----------------------------------------------------------------------------
    def _handshake_data(self, data: bytes) -> bytes | None:
        """Collect the response head; check it; return the bytes after it (None: not complete)."""
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._fail_open(HandshakeError("response head too big"))
            return None
        self._handshaking = False
        head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
        self._head = bytearray()
        try:
            check_handshake_response(head, self._request_key)
        except HandshakeError as error:
            self._fail_open(error)
            return None
        if not self.opened.done():
            self._was_open = True
            self.opened.set_result(None)
        return rest

    def _fail_open(self, error: HandshakeError) -> None:
        """The open failed (no-op once it succeeded): fail ``opened`` and drop the TCP."""
        self._handshaking = False
        if self.opened.done():
            return
        self.opened.set_exception(error)
        self.opened.exception()  # marked retrieved: a cancelled opener no longer waits for it
        if self.transport is not None:
            self.transport.abort()

    # --- frames -------------------------------------------------------------------------------
    def _write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def _on_close_frame(self, payload: bytes) -> None:
        try:
            code = parse_close(payload)
        except FrameError as error:
            self._fail(error.code, error.reason)
            return
        self.close_received = True
        if self.close_code is None:
            self.close_code = code
        if not self.close_sent:
            self.close_sent = True
            echo = b"" if code == CLOSE_NO_STATUS else close_payload(code)
            self._write(client_frame(OP_CLOSE, echo))
        self._report()
        if self.transport is not None:
            self.transport.close()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 section 7.1.7): send close ``code`` once, drop the TCP."""
        if not self.close_sent:
            self.close_sent = True
            self._write(client_frame(OP_CLOSE, close_payload(code, reason[:100])))
        if self.close_code is None:
            self.close_code = code
        if self.transport is not None:
            self.transport.close()

    def _report(self) -> None:
        if self._was_open and not self._reported and not self._we_closed:
            self._reported = True
            self.listener.ws_closed(self.close_code if self.close_code is not None else CLOSE_ABNORMAL)

    # --- public -------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """The handshake is done and no close frame was sent or received."""
        return self.opened.done() and not self.lost.done() and not self.close_sent and not self.close_received

    async def send_text(self, text: str) -> None:
        """Send one text frame (masked); waits while the transport has paused writing.

        Raises:
            ConnectionError: the socket is closing or closed.
        """
        if not self.is_open or self.transport is None or self.transport.is_closing():
            raise ConnectionError("websocket is closed")
        if self._drain is not None:
            await self._drain
            if not self.is_open:
                raise ConnectionError("websocket is closed")
        self.transport.write(client_frame(OP_TEXT, text.encode("utf-8")))

    async def close(self, code: int = CLOSE_NORMAL, timeout: float = 2.0) -> None:
        """Close normally (RFC 6455 section 7.1.2): send close ``code`` once, wait up to ``timeout``
        seconds for the server's close frame (the transport is closed when it comes), abort the
        transport if it does not. The listener is not told."""
        self._we_closed = True
        if self.transport is None or self.lost.done():
            return
        if not self._was_open:  # no WebSocket yet: nothing to close politely
            self.transport.abort()
            return
        if not self.close_sent:
            self.close_sent = True
            self._write(client_frame(OP_CLOSE, close_payload(code)))
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), timeout)
        except TimeoutError:
            self.transport.abort()

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake; the listener is not told."""
        self._we_closed = True
        if self.transport is not None:
            self.transport.abort()


async def connect(listener: Listener, url: str, *, query: str = "", max_size: int = 2**20) -> RawWebSocket:
    """Connect to ``url`` (``ws://host:port/path``, query ``query`` appended) and finish the
    opening handshake. Frames that arrive from then on go to ``listener``.

    The caller bounds the time (e.g. ``asyncio.timeout``) and aborts the returned protocol's
    transport on cancellation; this function aborts it itself when the handshake fails.

    Raises:
        OSError: the TCP connection failed.
        HandshakeError: the server did not accept the WebSocket (see
            :func:`check_handshake_response`) or closed during the handshake.
        ValueError: ``url`` is not a ``ws://`` URL.
    """
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise ValueError(f"not a ws:// URL: {url!r}")
    host, port = parts.hostname, parts.port or 80
    target = parts.path or "/"
    queries = [q for q in (parts.query, query) if q]
    if queries:
        target += "?" + "&".join(queries)
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(
        lambda: RawWebSocket(listener, host, port, target, max_size), host, port
    )
    try:
        await protocol.opened
    except BaseException:
        protocol.abort()
        raise
    return protocol
