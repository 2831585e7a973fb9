"""The client side of the load generator: one socket per object, and one :class:`Sink` per
worker process that counts what the sockets receive.

Two protocols:

- :class:`WsClient`: natter's frames (PROTOCOL.md) over the ``websockets`` library, for natter
  and for the FastAPI reference. Authentication by ``?token=``; a message frame is recognised by
  a substring test and its marker by a regex, without decoding the JSON (the hot path).
- :class:`SioClient`: the Socket.IO reference through python-socketio's ``AsyncClient``
  (WebSocket transport only), events named like natter's frame types.

Message text written by senders: ``t=<time.time_ns()>:<phase>:<sender id>:<counter>``; the
request ``id`` of a ``chat_message`` is the counter, so acks and errors map back to it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from array import array
from typing import Any

#: The marker in a message text (also matched inside a raw ``message`` frame).
MARK_RE = re.compile(r"t=(\d+):(\d+):(\d+):(\d+)")
MESSAGE_NEEDLE = '"type":"message"'
ACK_NEEDLE = '"type":"ack"'
ERROR_NEEDLE = '"type":"error"'


class ClientError(Exception):
    """A socket could not connect, authenticate or join; ``reason`` is a short label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def marker(sent_ns: int, phase: int, sender_id: int, counter: int) -> str:
    """The message text carrying the send time and the message's identity."""
    return f"t={sent_ns}:{phase}:{sender_id}:{counter}"


class Sink:
    """Counts one worker's deliveries for the current phase (see :mod:`natter.bench.stats`).

    ``slot`` identifies a local socket. A delivery of another phase is *late*; a second
    delivery of the same message to the same socket is a *duplicate*.
    """

    def __init__(self) -> None:
        self.closed: dict[str, int] = {}
        self.reset(-1)

    def reset(self, phase: int) -> None:
        """Start counting ``phase``."""
        self.phase = phase
        self.latencies: array[int] = array("q")
        self.seen: dict[int, set[int]] = {}
        self.per_msg: dict[int, int] = {}
        self.unique = 0
        self.duplicates = 0
        self.late = 0
        self.foreign = 0
        self.first_ns = 0
        self.last_ns = 0
        self.expected: int | None = None
        self.done = asyncio.Event()

    def delivery(self, slot: int, text: str, now_ns: int) -> None:
        """Account one delivered message whose text (or raw frame) is ``text``."""
        match = MARK_RE.search(text)
        if match is None:
            self.foreign += 1
            return
        sent_ns, phase, sender_id, counter = match.groups()
        if int(phase) != self.phase:
            self.late += 1
            return
        key = (int(sender_id) << 24) | int(counter)
        seen = self.seen.get(slot)
        if seen is None:
            seen = self.seen[slot] = set()
        if key in seen:
            self.duplicates += 1
            return
        seen.add(key)
        self.per_msg[key] = self.per_msg.get(key, 0) + 1
        self.latencies.append(now_ns - int(sent_ns))
        self.unique += 1
        if not self.first_ns:
            self.first_ns = now_ns
        self.last_ns = now_ns
        if self.expected is not None and self.unique >= self.expected:
            self.done.set()

    def socket_closed(self, code: int | None) -> None:
        """A socket was closed by the server or the network (not by us)."""
        label = str(code) if code is not None else "none"
        self.closed[label] = self.closed.get(label, 0) + 1


class SenderState:
    """What one sending socket sent and what came back (acks by counter, errors by code)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the previous phase."""
        self.sent = 0
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
    """One natter-protocol socket (natter or the FastAPI reference) over ``websockets``."""

    def __init__(self, slot: int, sink: Sink) -> None:
        self.slot = slot
        self.sink = sink
        self.sender = SenderState()
        self.conn: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[dict[str, Any]] | None = None
        self._closing = False

    async def open(self, url: str, token: str, timeout: float) -> None:
        """Connect with ``?token=`` and wait for ``auth_success``.

        Raises:
            ClientError: refused, closed, an ``error`` frame, or no answer in ``timeout`` s.
        """
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        try:
            async with asyncio.timeout(timeout):
                self.conn = await connect(
                    f"{url}?token={token}",
                    compression=None,
                    ping_interval=None,
                    max_size=2**20,
                    open_timeout=timeout,
                    close_timeout=2,
                )
                first = await self.conn.recv()
        except TimeoutError:
            await self._abort()
            raise ClientError("timeout") from None
        except ConnectionClosed as closed:
            raise ClientError(f"closed {closed.rcvd.code if closed.rcvd else 'none'}") from None
        except (OSError, InvalidHandshake) as error:
            await self._abort()
            raise ClientError(type(error).__name__) from None
        if '"type":"auth_success"' not in first:
            await self._abort()
            raise ClientError(_error_code(first))

    def start_reader(self) -> None:
        """Start the task reading frames for the rest of the socket's life."""
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        sink, slot = self.sink, self.slot
        try:
            async for text in self.conn:
                if MESSAGE_NEEDLE in text:
                    sink.delivery(slot, text, time.time_ns())
                elif ACK_NEEDLE in text:
                    request_id = json.loads(text).get("id")
                    if isinstance(request_id, int):
                        self.sender.acked.add(request_id)
                elif ERROR_NEEDLE in text:
                    frame = json.loads(text)
                    self.sender.on_error(str(frame.get("code")), frame.get("id"))
                    self._resolve(frame)
                elif self._waiter is not None and '"type":"joined"' in text:
                    self._resolve(json.loads(text))
        except ConnectionClosed:
            pass
        finally:
            if not self._closing:
                rcvd = getattr(self.conn, "close_code", None)
                sink.socket_closed(rcvd)
            self._resolve({"type": "error", "code": "closed"})

    def _resolve(self, frame: dict[str, Any]) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)

    async def join(self, room: str, timeout: float) -> None:
        """Send ``join`` and wait for ``joined``.

        Raises:
            ClientError: an ``error`` answer or no answer within ``timeout`` seconds.
        """
        self._waiter = asyncio.get_running_loop().create_future()
        await self.conn.send(json.dumps({"type": "join", "room": room, "id": "join"}))
        try:
            answer = await asyncio.wait_for(self._waiter, timeout)
        except TimeoutError:
            raise ClientError("join timeout") from None
        if answer.get("type") != "joined":
            raise ClientError(f"join {answer.get('code')}")

    async def send_chat(self, room: str, text: str, counter: int, client_msg_id: str) -> None:
        """Send one ``chat_message`` whose request ``id`` is ``counter``."""
        await self.conn.send(
            f'{{"type":"chat_message","room":"{room}","message":"{text}",'
            f'"client_msg_id":"{client_msg_id}","id":{counter}}}'
        )

    async def close(self) -> None:
        """Close normally and stop the reader."""
        self._closing = True
        if self.conn is not None:
            try:
                await asyncio.wait_for(self.conn.close(), 3)
            except Exception:  # already gone
                pass
        if self._reader is not None:
            self._reader.cancel()

    async def _abort(self) -> None:
        self._closing = True
        if self.conn is not None:
            try:
                await asyncio.wait_for(self.conn.close(), 1)
            except Exception:
                pass


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


def _error_code(text: str) -> str:
    try:
        frame = json.loads(text)
    except ValueError:
        return "bad first frame"
    if isinstance(frame, dict) and frame.get("type") == "error":
        return f"error {frame.get('code')}"
    return f"unexpected {frame.get('type') if isinstance(frame, dict) else 'frame'}"
