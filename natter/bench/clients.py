"""The client side of the load generator: one socket per object, and one :class:`Sink` per
worker process that counts what the sockets receive.

Two protocols:

- :class:`WsClient`: natter's frames (PROTOCOL.md) over :mod:`natter.bench.rawws` (a minimal
  RFC 6455 client protocol on the worker's uvloop), for natter and for the FastAPI reference.
  Authentication by ``?token=``; frames stay ``bytes``: a message frame is recognised by a
  substring test and its marker by a regex, without decoding the JSON (the hot path). The
  receive time is taken once per received chunk (see :mod:`natter.bench.rawws`).
- :class:`SioClient`: the Socket.IO reference through python-socketio's ``AsyncClient``
  (WebSocket transport only), events named like natter's frame types.

Message text written by senders: ``t=<time.time_ns()>:<phase>:<sender id>:<counter>``; the
request ``id`` of a ``chat_message`` is the counter, so acks and errors map back to it. With
``--reactions`` some sends are ``react`` requests (protocol v2) whose ``emoji`` is the marker
``u<microseconds since the phase start>:<phase>:<sender id>:<counter>`` (an emoji is at most 32
characters); their ``reaction`` frames are counted like messages.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from array import array
from typing import Any

from natter.bench import rawws
from natter.bench.rawws import RawWebSocket

#: The marker ``t=<send ns>:<phase>:<sender>:<counter>`` in a message text (also matched inside
#: a raw ``message`` frame), grouped as (send time, phase, ``<sender>:<counter>``).
MARK_RE_B = re.compile(rb"t=(\d+):(\d+):(\d+:\d+)")
#: Recognising a frame's type in its raw bytes. natter and the reference send compact JSON with
#: ``type`` first, so a ``message`` frame starts with MESSAGE_PREFIX_B (the cheap test); the
#: needles are the fallback for any other key order.
MESSAGE_PREFIX_B = b'{"type":"message"'
MESSAGE_NEEDLE_B = b'"type":"message"'
REACTION_PREFIX_B = b'{"type":"reaction"'
#: The reaction marker in a raw ``reaction`` frame: (microseconds since the phase start, phase,
#: ``<sender>:<counter>``).
REACTION_MARK_RE_B = re.compile(rb'"emoji":"u(\d+):(\d+):(\d+:\d+)"')
ACK_NEEDLE_B = b'"type":"ack"'
ERROR_NEEDLE_B = b'"type":"error"'
JOINED_NEEDLE_B = b'"type":"joined"'
AUTH_SUCCESS_NEEDLE = b'"type":"auth_success"'
#: Seconds :meth:`WsClient.close` waits for the server's close frame before aborting.
CLOSE_TIMEOUT = 2.0


class ClientError(Exception):
    """A socket could not connect, authenticate or join; ``reason`` is a short label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def marker(sent_ns: int, phase: int, sender_id: int, counter: int) -> str:
    """The message text carrying the send time and the message's identity."""
    return f"t={sent_ns}:{phase}:{sender_id}:{counter}"


def reaction_marker(offset_us: int, phase: int, sender_id: int, counter: int) -> str:
    """A reaction's ``emoji`` carrying its send time (microseconds since the phase's
    ``start_at``) and identity; at most 32 characters for phases < 100, senders < 100,000 and
    runs shorter than 2.7 hours (PROTOCOL.md section 8 limits an emoji to 32)."""
    return f"u{offset_us}:{phase}:{sender_id}:{counter}"


class Sink:
    """Counts one worker's deliveries for the current phase (see :mod:`natter.bench.stats`).

    ``slot`` identifies a local socket. A delivery of another phase is *late*; a second
    delivery of the same message to the same socket is a *duplicate*.
    """

    def __init__(self) -> None:
        self.closed: dict[str, int] = {}
        self.reset(-1)

    def reset(self, phase: int, base_us: int = 0) -> None:
        """Start counting ``phase``; ``base_us`` is its start time (Unix microseconds), the
        origin of reaction markers."""
        self.phase = phase
        self._base_ns = base_us * 1000
        self._phase_b = str(phase).encode("ascii")
        self.latencies: array[int] = array("q")
        #: ``b"<sender>:<counter>"`` -> the slots that received that message in the phase (a
        #: fan-out delivers one message to many sockets in a row, so this set stays in cache).
        self.seen: dict[bytes, set[int]] = {}
        self.unique = 0
        self.duplicates = 0
        self.late = 0
        self.foreign = 0
        self.first_ns = 0
        self.last_ns = 0
        self._target = 1 << 62  # ``expected`` or, while it is None, never reached
        self.done = asyncio.Event()

    @property
    def expected(self) -> int | None:
        """Distinct deliveries owed to this worker in the phase; ``done`` is set once reached."""
        return None if self._target == 1 << 62 else self._target

    @expected.setter
    def expected(self, value: int | None) -> None:
        self._target = 1 << 62 if value is None else value
        if self.unique >= self._target:
            self.done.set()

    @property
    def per_msg(self) -> dict[int, int]:
        """Distinct deliveries per message of the phase, keyed by :func:`~natter.bench.stats.message_key`."""
        out: dict[int, int] = {}
        for ident, slots in self.seen.items():
            sender_id, _, counter = ident.partition(b":")
            out[(int(sender_id) << 24) | int(counter)] = len(slots)
        return out

    def delivery(self, slot: int, text: str | bytes, now_ns: int) -> None:
        """Account one delivered message whose text (or raw frame, ``bytes`` or ``str``) is
        ``text``; ``now_ns`` is its receive time (``time.time_ns()``).

        The hot path of the load generator (one call per received message): the marker is read
        with one regex and kept as bytes; only the send time is converted to an int.
        """
        if type(text) is not bytes:
            text = text.encode()  # type: ignore[union-attr]
        match = MARK_RE_B.search(text)
        if match is None:
            self.foreign += 1
            return
        sent_ns, phase, ident = match.groups()
        self._count(slot, int(sent_ns), phase, ident, now_ns)

    def reaction(self, slot: int, frame: bytes, now_ns: int) -> None:
        """Account one delivered ``reaction`` frame (raw bytes) carrying a reaction marker."""
        match = REACTION_MARK_RE_B.search(frame)
        if match is None:
            self.foreign += 1
            return
        offset_us, phase, ident = match.groups()
        self._count(slot, self._base_ns + int(offset_us) * 1000, phase, ident, now_ns)

    def _count(self, slot: int, sent_ns: int, phase: bytes, ident: bytes, now_ns: int) -> None:
        if phase != self._phase_b:
            self.late += 1
            return
        slots = self.seen.get(ident)
        if slots is None:
            self.seen[ident] = {slot}
        elif slot in slots:
            self.duplicates += 1
            return
        else:
            slots.add(slot)
        self.latencies.append(now_ns - sent_ns)
        self.unique += 1
        if not self.first_ns:
            self.first_ns = now_ns
        self.last_ns = now_ns
        if self.unique >= self._target:
            self.done.set()

    def socket_closed(self, code: int | None) -> None:
        """A socket was closed by the server or the network (not by us)."""
        label = str(code) if code is not None else "none"
        self.closed[label] = self.closed.get(label, 0) + 1


class SenderState:
    """What one sending socket sent and what came back (acks by counter, errors by code)."""

    def __init__(self) -> None:
        #: ``seq`` of this sender's latest acked message (kept across phases): what its
        #: reactions target.
        self.last_message_seq: int | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the previous phase (but not ``last_message_seq``)."""
        self.sent = 0
        #: how many of ``sent`` were ``react`` requests
        self.reactions = 0
        self.acked: set[int] = set()
        self.failed: set[int] = set()
        self.errors: dict[str, int] = {}
        self.lag_ns: array[int] = array("q")

    def outstanding(self) -> int:
        return self.sent - len(self.acked) - len(self.failed)

    def on_error(self, code: str, request_id: Any) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        if isinstance(request_id, int):
            self.failed.add(request_id)


class WsClient:
    """One natter-protocol socket (natter or the FastAPI reference) over :mod:`natter.bench.rawws`.

    Frames are handled in the protocol's ``data_received`` as ``bytes`` (no task, no await, no
    decoding): a ``message`` frame goes to the :class:`Sink` by a substring test; ``ack`` and
    ``error`` frames (one per sent message at most) are decoded with ``json.loads``.
    """

    __slots__ = ("_delivery", "_first", "_waiter", "sender", "sink", "slot", "ws")

    def __init__(self, slot: int, sink: Sink) -> None:
        self.slot = slot
        self.sink = sink
        self.sender = SenderState()
        self._delivery = sink.delivery
        self.ws: RawWebSocket | None = None
        self._first: asyncio.Future[bytes] | None = None
        self._waiter: asyncio.Future[dict[str, Any]] | None = None

    async def open(self, url: str, token: str, timeout: float) -> None:
        """Connect with ``?token=`` and wait for the first frame, which must be ``auth_success``.

        Raises:
            ClientError: refused (``"http 403"``, an ``OSError`` name), closed (``"closed
                1008"``), an ``error`` frame (``"error auth_failed"``), or no answer within
                ``timeout`` seconds (``"timeout"``).
        """
        self._first = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                self.ws = await rawws.connect(self, url, query=f"token={token}")
                first = await self._first
        except TimeoutError:
            self._abort()
            raise ClientError("timeout") from None
        except rawws.HandshakeError as error:
            raise ClientError(str(error)) from None
        except ClientError:
            self._abort()
            raise
        except OSError as error:
            raise ClientError(type(error).__name__) from None
        finally:
            self._first = None
        if AUTH_SUCCESS_NEEDLE not in first:
            self._abort()
            raise ClientError(_error_code(first))

    def start_reader(self) -> None:
        """Nothing to start: frames are handled as they arrive, from :meth:`open` on."""

    # --- rawws.Listener: called from data_received -------------------------------------------
    def ws_text(self, payload: bytes, now_ns: int) -> None:
        """One text frame (see the class docstring)."""
        if payload.startswith(MESSAGE_PREFIX_B) or MESSAGE_NEEDLE_B in payload:
            self._delivery(self.slot, payload, now_ns)
        elif payload.startswith(REACTION_PREFIX_B):
            self.sink.reaction(self.slot, payload, now_ns)
        elif self._first is not None:
            if not self._first.done():
                self._first.set_result(payload)
        elif ACK_NEEDLE_B in payload:
            ack = json.loads(payload)
            request_id = ack.get("id")
            if isinstance(request_id, int):
                self.sender.acked.add(request_id)
            seq = ack.get("seq")
            if "target" not in ack and isinstance(seq, int):  # a message's ack, not a reaction's
                last = self.sender.last_message_seq
                self.sender.last_message_seq = seq if last is None else max(last, seq)
        elif ERROR_NEEDLE_B in payload:
            frame = json.loads(payload)
            self.sender.on_error(str(frame.get("code")), frame.get("id"))
            self._resolve(frame)
        elif self._waiter is not None and JOINED_NEEDLE_B in payload:
            self._resolve(json.loads(payload))

    def ws_binary(self, payload: bytes, now_ns: int) -> None:
        """A binary frame: not part of natter's protocol, counted as foreign."""
        self.sink.foreign += 1

    def ws_closed(self, code: int) -> None:
        """The server or the network closed the socket (not us)."""
        if self._first is not None and not self._first.done():
            self._first.set_exception(ClientError(f"closed {code}"))
            return
        self.sink.socket_closed(code)
        self._resolve({"type": "error", "code": "closed"})

    def _resolve(self, frame: dict[str, Any]) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)

    async def join(self, room: str, timeout: float) -> None:
        """Send ``join`` and wait for ``joined``.

        Raises:
            ClientError: an ``error`` answer, a closed socket, or no answer within ``timeout`` s.
        """
        if self.ws is None:
            raise ClientError("join closed")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self.ws.send_text(json.dumps({"type": "join", "room": room, "id": "join"}))
            answer = await asyncio.wait_for(self._waiter, timeout)
        except TimeoutError:
            raise ClientError("join timeout") from None
        except ConnectionError:
            raise ClientError("join closed") from None
        if answer.get("type") != "joined":
            raise ClientError(f"join {answer.get('code')}")

    async def send_chat(self, room: str, text: str, counter: int, client_msg_id: str) -> None:
        """Send one ``chat_message`` whose request ``id`` is ``counter``.

        Raises:
            ConnectionError: the socket is closed.
        """
        if self.ws is None:
            raise ConnectionError("not open")
        await self.ws.send_text(
            f'{{"type":"chat_message","room":"{room}","message":"{text}",'
            f'"client_msg_id":"{client_msg_id}","id":{counter}}}'
        )

    async def send_react(self, room: str, target: int, emoji: str, counter: int, client_msg_id: str) -> None:
        """Send one ``react`` (``op`` add) whose request ``id`` is ``counter``; ``emoji`` is a
        :func:`reaction_marker` (no characters that need JSON escaping).

        Raises:
            ConnectionError: the socket is closed.
        """
        if self.ws is None:
            raise ConnectionError("not open")
        await self.ws.send_text(
            f'{{"type":"react","room":"{room}","target":{target},"emoji":"{emoji}","op":"add",'
            f'"client_msg_id":"{client_msg_id}","id":{counter}}}'
        )

    async def close(self) -> None:
        """Close normally (close 1000, at most 2 s for the server's answer, then abort)."""
        if self.ws is not None:
            await self.ws.close(rawws.CLOSE_NORMAL, CLOSE_TIMEOUT)

    def _abort(self) -> None:
        if self.ws is not None:
            self.ws.abort()


class SioClient:
    """One Socket.IO socket through python-socketio's ``AsyncClient`` (WebSocket transport)."""

    def __init__(self, slot: int, sink: Sink, http_session: Any) -> None:
        import socketio

        self.slot = slot
        self.sink = sink
        self.sender = SenderState()
        self._closing = False
        self.sio = socketio.AsyncClient(
            reconnection=False, handle_sigint=False, http_session=http_session, request_timeout=10
        )
        self.sio.on("message", self._on_message)
        self.sio.on("disconnect", self._on_disconnect)

    def _on_message(self, frame: Any) -> None:
        try:
            text = frame["data"]["message"]
        except (KeyError, TypeError):
            self.sink.foreign += 1
            return
        self.sink.delivery(self.slot, text, time.time_ns())

    def _on_disconnect(self, *args: Any) -> None:
        if not self._closing:
            self.sink.socket_closed(None)

    async def open(self, url: str, token: str, timeout: float) -> None:
        """Connect with ``auth={"token": token}`` over the WebSocket transport.

        Raises:
            ClientError: refused or not connected within ``timeout`` seconds.
        """
        import socketio

        try:
            await asyncio.wait_for(
                self.sio.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=timeout),
                timeout,
            )
        except TimeoutError:
            await self._abort()
            raise ClientError("timeout") from None
        except socketio.exceptions.ConnectionError as error:
            await self._abort()
            raise ClientError(f"refused: {str(error)[:40]}") from None

    def start_reader(self) -> None:
        """Nothing to start: python-socketio reads in its own tasks."""

    async def join(self, room: str, timeout: float) -> None:
        """``join`` event with an ack; raises :class:`ClientError` unless it is ``joined``."""
        try:
            answer = await self.sio.call(
                "join", {"type": "join", "room": room, "id": "join"}, timeout=timeout
            )
        except Exception as error:
            raise ClientError(f"join {type(error).__name__}") from None
        if not isinstance(answer, dict) or answer.get("type") != "joined":
            raise ClientError("join refused")

    async def send_react(self, room: str, target: int, emoji: str, counter: int, client_msg_id: str) -> None:
        """Not part of the Socket.IO reference (``RunParams.validate`` refuses ``--reactions``)."""
        raise NotImplementedError("the Socket.IO reference has no reactions")

    async def send_chat(self, room: str, text: str, counter: int, client_msg_id: str) -> None:
        """``chat_message`` event; its ack callback records the ack or the error."""

        def on_ack(answer: Any = None) -> None:
            if isinstance(answer, dict) and answer.get("type") == "ack":
                self.sender.acked.add(counter)
            else:
                code = answer.get("code") if isinstance(answer, dict) else "bad_ack"
                self.sender.on_error(str(code), counter)

        frame = {
            "type": "chat_message",
            "room": room,
            "message": text,
            "client_msg_id": client_msg_id,
            "id": counter,
        }
        await self.sio.emit("chat_message", frame, callback=on_ack)

    async def close(self) -> None:
        """Disconnect normally."""
        self._closing = True
        try:
            await asyncio.wait_for(self.sio.disconnect(), 3)
        except Exception:
            pass

    async def _abort(self) -> None:
        self._closing = True
        try:
            await asyncio.wait_for(self.sio.disconnect(), 1)
        except Exception:
            pass


def _error_code(text: bytes) -> str:
    try:
        frame = json.loads(text)
    except ValueError:
        return "bad first frame"
    if isinstance(frame, dict) and frame.get("type") == "error":
        return f"error {frame.get('code')}"
    return f"unexpected {frame.get('type') if isinstance(frame, dict) else 'frame'}"
