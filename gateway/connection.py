"""One client socket: its protocol state machine (PROTOCOL.md sections 1-5 and 7).

States: connected -> authenticated -> closed. Frames are answered in arrival order and a
client's sends are stored in the order it sent them; ``chat_message`` frames are pipelined
(:mod:`gateway.send_pipeline`), every other frame is handled once the sends before it are
answered. Everything the socket receives goes through its :class:`~gateway.writer.SendQueue`.
Teardown follows centrifuge ``Client.close``: leave the hub and close first, the slow work
(presence leaves) after.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

from nats.errors import NoRespondersError
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway import frame_handlers
from gateway.pages import complete
from gateway.ratelimit import AbuseCounter, TokenBucket
from gateway.send_pipeline import SendPipeline
from gateway.tokens import Claims
from gateway.wire import Outbound, direct_sink
from gateway.writer import SendQueue
from shared import subjects
from shared.errors import CloseCode, ErrorCode, ProtocolError
from shared.internal import (
    SEND_BATCH_MAX,
    JoinRequest,
    LeaveRequest,
    NotifyListRequest,
    with_request_id,
)
from shared.protocol import (
    PROTOCOL_VERSION,
    AuthFrame,
    ChatMessageFrame,
    JoinFrame,
    LeaveFrame,
    PingFrame,
    TypingFrame,
    dumps,
    encode_frame,
    error_frame,
    parse_frame,
    request_id_of,
)

if TYPE_CHECKING:
    from gateway.node import Node

logger = logging.getLogger(__name__)

RequestId = str | int | None

#: Bytes of a NATS message's ``max_payload`` left for the request's headers: a
#: ``chat.send.batch`` body holds as many sends as fit the rest.
BATCH_SLACK: Final = 8192


class Connection:
    """The protocol state of one WebSocket.

    Args:
        websocket: the accepted-or-not Starlette socket.
        node: the gateway node (hub, bus, verifier, metrics, settings).

    Slotted, and the handshake's headers and query string are read from the ASGI scope without
    caching parsed copies: an idle socket should cost as little memory as possible
    (docs/benchmarks.md, "idle").
    """

    __slots__ = (
        "_expiry",
        "_held",
        "_revoked",
        "_sends",
        "abuse",
        "authenticated",
        "bucket",
        "closing",
        "conn_id",
        "expires_at",
        "node",
        "queue",
        "role",
        "rooms",
        "session_id",
        "settings",
        "user_id",
        "username",
        "ws",
    )

    def __init__(self, websocket: WebSocket, node: Node) -> None:
        self.ws = websocket
        self.node = node
        self.settings = node.settings
        self.conn_id = secrets.token_hex(8)
        self.user_id = ""
        self.username = ""
        self.session_id: str | None = None
        self.role = "user"
        self.expires_at = 0
        self.authenticated = False
        #: joined rooms -> the registry revision the join was authorised at (None while the
        #: join is in flight): a removal with a newer revision drops the room (revoke_room).
        self.rooms: dict[str, int | None] = {}
        #: removals that arrived while a join of that room was in flight: room -> revision.
        self._revoked: dict[str, int] | None = None
        self.closing = False
        self.queue = SendQueue(
            direct_sink(websocket.scope), self._send_text, self._close_socket, node.settings.send_queue_frames
        )
        self.bucket = TokenBucket(node.settings.rate_per_second, node.settings.rate_burst)
        self.abuse = AbuseCounter(node.settings.abuse_limit)
        self._expiry: asyncio.TimerHandle | None = None
        #: pushed frames held back during the first authentication (None: not holding).
        self._held: list[Outbound] | None = None
        #: chat_message frames waiting for the send in flight (made at the first send)
        self._sends: SendPipeline[ChatMessageFrame] | None = None

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"<Connection {self.conn_id} user={self.user_id or '-'}>"

    # --- output ---------------------------------------------------------------------------
    async def _send_text(self, text: str) -> None:
        await self.ws.send_text(text)

    async def _close_socket(self, code: int, reason: str) -> None:
        self.node.metrics.closes.labels(str(code)).inc()
        await self.ws.close(code, reason)

    def enqueue(self, frame: Outbound) -> None:
        """Deliver a pushed frame (fan-out); held back while the first ``auth_success`` and
        its ``notifications`` summary are being sent, so those two come first (PROTOCOL.md s2)."""
        if self._held is not None:
            self._held.append(frame)
            return
        self._put(frame)

    def _put(self, frame: Outbound) -> None:
        """Send or queue a frame; on overflow close this socket 1013 (others are unaffected)."""
        if not self.queue.put(frame):
            self._overflow()

    def _overflow(self) -> None:
        if self.closing:
            return
        self.closing = True
        logger.info("conn=%s user=%s send queue overflow: closing 1013", self.conn_id, self.user_id)
        self.node.spawn(self.queue.abort(CloseCode.TRY_AGAIN_LATER, "send queue overflow"))

    def send(self, frame_type: str, request_id: RequestId = None, /, **fields: Any) -> None:
        """Queue a server frame built from fields."""
        self.node.metrics.frame_out(frame_type)
        self._put(Outbound(encode_frame(frame_type, request_id, **fields).encode()))

    def send_reply(self, frame_type: str, reply: bytes, request_id: RequestId) -> None:
        """Queue a service's pre-encoded frame with the request ``id`` spliced in."""
        self.node.metrics.frame_out(frame_type)
        self._put(Outbound(with_request_id(reply, request_id)))

    def send_error(self, error: ProtocolError, request_id: RequestId = None) -> None:
        """Queue an ``error`` frame (PROTOCOL.md section 7)."""
        self.node.metrics.error(error.code.value)
        self.node.metrics.frame_out("error")
        self._put(Outbound(error_frame(error, request_id).encode()))

    def close(self, code: int, reason: str, error: ProtocolError | None = None) -> None:
        """Queue ``error`` (if any) then a close; the reader sees the disconnect."""
        if self.closing:
            return
        if error is not None:
            self.send_error(error)
        self.closing = True
        self.queue.put_close(code, reason)

    async def shutdown(self, code: int, reason: str) -> None:
        """Close now, dropping queued frames (gateway shutdown)."""
        self.closing = True
        await self.queue.abort(code, reason)

    # --- lifecycle ------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve the socket until it closes: origin check, accept, auth, frames, teardown."""
        if not self._origin_allowed():
            logger.info("conn=%s refused: origin not allowed", self.conn_id)
            await self.ws.close(code=CloseCode.POLICY_VIOLATION)
            return
        await self.ws.accept()
        self.queue.start()
        address = self._address()
        if not self.node.pending.admit(address):
            # Unauthenticated sockets have their own caps (gateway.edge.PendingSockets): they
            # can neither fill max_connections nor be hoarded by one address.
            logger.info("conn=%s refused: too many unauthenticated sockets", self.conn_id)
            await self._refuse(CloseCode.TRY_AGAIN_LATER, "too many unauthenticated sockets")
            return
        self.node.connections.add(self)
        pending = True
        try:
            authenticated = await self._first_auth()
            self.node.pending.release(address)
            pending = False
            if authenticated:
                await self._receive_loop()
            else:
                await self._drain_reader()
        except WebSocketDisconnect:
            pass
        finally:
            if pending:
                self.node.pending.release(address)
            try:
                if self._sends is not None:  # sends read before the disconnect are still stored
                    await self._sends.settled()
            finally:
                await self._teardown()

    async def _refuse(self, code: int, reason: str) -> None:
        """Close an accepted socket at once with ``code`` / ``reason`` (nothing else is sent)."""
        self.close(code, reason)
        await self._drain_reader()
        await self.queue.stop()

    def _address(self) -> str:
        """The client's address (after the configured proxies' X-Forwarded-For)."""
        client = self.ws.scope.get("client")
        return str(client[0]) if client else "-"

    async def _first_auth(self) -> bool:
        """Authenticate by handshake token or ``auth`` frame; the token is not kept after."""
        token = self._token_from_handshake()
        if token is not None:
            return await self._authenticate(token, None)
        return await self._await_auth_frame()

    def _origin_allowed(self) -> bool:
        """RFC 6455 section 10.2: browsers send ``Origin``; non-browser clients may omit it."""
        origin = self._header(b"origin")
        if origin is None:
            return True
        allowed = self.settings.allowed_origins
        if "*" in allowed or origin in allowed:
            return True
        if allowed:
            return False
        host = self._header(b"host") or ""
        return origin.split("://", 1)[-1].rstrip("/") == host

    def _header(self, name: bytes) -> str | None:
        """The first value of handshake header ``name`` (lower-case bytes), or None."""
        for key, value in self.ws.scope["headers"]:
            if key == name:
                return str(value.decode("latin-1"))
        return None

    def _token_from_handshake(self) -> str | None:
        """``?token=`` or ``Authorization: Bearer`` (PROTOCOL.md section 2, methods 1 and 2)."""
        query = self.ws.scope.get("query_string", b"")
        if b"token=" in query:
            for key, value in parse_qsl(query.decode("latin-1")):
                if key == "token" and value:
                    return value
        header = self._header(b"authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None

    async def _drain_reader(self) -> None:
        """Read until the peer's disconnect after we queued a close (bounded)."""
        try:
            async with asyncio.timeout(5):
                while True:
                    message = await self.ws.receive()
                    if message["type"] == "websocket.disconnect":
                        return
        except (TimeoutError, WebSocketDisconnect, RuntimeError):
            return

    async def _teardown(self) -> None:
        self.closing = True
        if self._expiry is not None:
            self._expiry.cancel()
        self.node.connections.discard(self)
        hub, bus = self.node.hub, self.node.bus
        assert bus is not None
        leaves: list[tuple[str, bool]] = []
        for room in list(self.rooms):
            empty, last_of_user = hub.leave(room, self)
            if empty:
                bus.release_room(room)
            leaves.append((room, last_of_user))
        self.rooms.clear()
        if self.authenticated:
            self.node.authenticated_count -= 1
            self.node.metrics.connections.dec()
            if hub.remove_user_socket(self):
                bus.release_user(self.user_id)
        await self.queue.stop()
        presence_leaves = [room for room, last in leaves if last]
        if presence_leaves:
            self.node.spawn(self._leave_presence(presence_leaves))

    async def _leave_presence(self, rooms: list[str]) -> None:
        for room in rooms:
            body = LeaveRequest(
                room=room,
                user_id=self.user_id,
                username=self.username,
                gateway_id=self.node.gateway_id,
                last_local=True,
            )
            try:
                await self.node.request(subjects.CHAT_LEAVE, body.model_dump_json().encode())
            except ProtocolError as error:
                logger.warning("conn=%s room=%s presence leave failed: %s", self.conn_id, room, error)

    # --- authentication -------------------------------------------------------------------
    async def _await_auth_frame(self) -> bool:
        """PROTOCOL.md section 2, method 3: ``auth`` within ``auth_timeout``; ``ping`` allowed."""
        deadline = time.monotonic() + self.settings.auth_timeout
        while not self.closing:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    message = await self.ws.receive()
            except TimeoutError:
                self.close(
                    CloseCode.POLICY_VIOLATION,
                    "auth timeout",
                    ProtocolError(ErrorCode.AUTH_TIMEOUT, "No auth frame within the time limit"),
                )
                return False
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            text = message.get("text")
            if text is not None:
                wait = self.bucket.take()
                if wait != 0.0:
                    await self._reject(wait, text)  # nothing is pipelined before auth
                    continue
            try:
                frame = parse_frame(text)[1] if text is not None else None
            except ProtocolError as error:
                if _type_of_text(text or "") == "auth":  # an auth attempt that cannot succeed
                    failure = ProtocolError(ErrorCode.AUTH_FAILED, error.message)
                    self._refuse_auth(failure, _id_of_text(text or ""))
                    return False
                frame = None
            if isinstance(frame, PingFrame):
                self.node.metrics.frame_in(frame.type)
                self.send("pong", frame.id)
            elif isinstance(frame, AuthFrame):
                self.node.metrics.frame_in(frame.type)
                return await self._authenticate(frame.token, frame.id)
            else:
                # PROTOCOL.md section 2: anything else before auth (other types, unknown types,
                # malformed or binary frames) is auth_required and close 1008.
                self.close(
                    CloseCode.POLICY_VIOLATION,
                    "auth required",
                    ProtocolError(ErrorCode.AUTH_REQUIRED, "Authenticate first"),
                )
                return False
        return False

    async def _authenticate(self, token: str, request_id: RequestId) -> bool:
        """Verify ``token``; first auth or refresh (PROTOCOL.md section 2). True if authenticated."""
        assert self.node.verifier is not None
        try:
            claims = await self.node.verifier.verify(token)
        except ProtocolError as error:
            if self.authenticated:
                self.send_error(error, request_id)
                return True
            if error.code is ErrorCode.UNAVAILABLE:
                self.close(
                    CloseCode.TRY_AGAIN_LATER, "auth unavailable", ProtocolError(ErrorCode.UNAVAILABLE)
                )
                return False
            self._refuse_auth(ProtocolError(ErrorCode.AUTH_FAILED, error.message), request_id)
            return False
        if self.authenticated:
            if claims.user_id != self.user_id:
                self.send_error(ProtocolError(ErrorCode.FORBIDDEN, "Token is for another user"), request_id)
                return True
            self._apply_claims(claims)
            self._send_auth_success(request_id)
            return True
        if claims.role != "user":
            # A service or admin token is for the HTTP API; it never chats as a user.
            self._refuse_auth(
                ProtocolError(ErrorCode.AUTH_FAILED, "Service tokens cannot open chat sockets"), request_id
            )
            return False
        if self.node.authenticated_count >= self.settings.max_connections:
            self.close(CloseCode.TRY_AGAIN_LATER, "gateway full")  # before auth_success
            return False
        self._apply_claims(claims)
        self.authenticated = True
        self.node.authenticated_count += 1
        self.node.metrics.connections.inc()
        assert self.node.bus is not None
        self._held = []
        self.node.hub.add_user_socket(self)
        try:
            await self.node.bus.subscribe_user(self.user_id)
        except Exception:
            logger.warning("conn=%s user subscription failed", self.conn_id)
        self._send_auth_success(request_id)
        try:
            await self._send_summary()
        finally:
            held, self._held = self._held, None
            for frame in held:
                self._put(frame)
        return True

    def _refuse_auth(self, failure: ProtocolError, request_id: RequestId) -> None:
        """``auth_failed`` (with the request ``id``) then close 1008 "auth failed" (section 2)."""
        self.node.metrics.error(failure.code.value)
        self.node.metrics.frame_out("error")
        self._put(Outbound(error_frame(failure, request_id).encode()))
        self.closing = True
        self.queue.put_close(CloseCode.POLICY_VIOLATION, "auth failed")

    def _apply_claims(self, claims: Claims) -> None:
        self.user_id = claims.user_id
        self.username = claims.username
        self.session_id = claims.session_id
        self.role = claims.role
        self.expires_at = claims.expires_at
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, claims.expires_at - time.time())
        self._expiry = loop.call_at(loop.time() + delay, self._expired)

    def _expired(self) -> None:
        self.close(CloseCode.POLICY_VIOLATION, "token expired", ProtocolError(ErrorCode.TOKEN_EXPIRED))

    def _send_auth_success(self, request_id: RequestId) -> None:
        self.send(
            "auth_success",
            request_id,
            user_id=self.user_id,
            username=self.username,
            session_id=self.session_id,
            expires_at=self.expires_at,
            protocol=PROTOCOL_VERSION,
        )

    async def _send_summary(self) -> None:
        body = NotifyListRequest(user_id=self.user_id, unread_only=True, limit=50)
        try:
            reply = await self.node.request(subjects.NOTIFY_LIST, body.model_dump_json().encode())
        except ProtocolError as error:
            self.send_error(error)
            return
        self.send_reply("notifications", reply, None)

    # --- frames ---------------------------------------------------------------------------
    async def _reject(self, wait: float, text: str | None) -> None:
        """A frame over the rate limit (PROTOCOL.md section 1): ``rate_limited`` with
        ``retry_after``, answered after the sends before it; persistent abuse closes 1008.

        The rejected frame's ``id`` is echoed (decoding it only on this rejection path). Only
        frames that arrive before the announced ``retry_after`` count as abuse
        (:class:`~gateway.ratelimit.AbuseCounter`).
        """
        abusive, retry_after = self.abuse.reject(wait)
        if abusive:
            self.close(CloseCode.POLICY_VIOLATION, "rate limit abuse")
            return
        await self._settle_sends()
        error = ProtocolError(ErrorCode.RATE_LIMITED, retry_after=retry_after)
        self.send_error(error, _id_of_text(text) if text is not None else None)

    async def _receive_loop(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if self.closing:
                continue
            text = message.get("text")
            wait = self.bucket.take()
            if wait != 0.0:
                await self._reject(wait, text)
            elif text is None:
                await self._settle_sends()
                self.send_error(ProtocolError(ErrorCode.UNSUPPORTED_FRAME))
            else:
                await self._handle_text(text)

    async def _settle_sends(self) -> None:
        """Wait for the pipelined sends (:mod:`gateway.send_pipeline`): the barrier that keeps
        answers in arrival order."""
        if self._sends is not None and self._sends.busy:
            await self._sends.settled()

    async def _handle_text(self, text: str) -> None:
        request_id: RequestId = None
        try:
            raw, frame = parse_frame(text)
            request_id = request_id_of(raw)
            self.node.metrics.frame_in(frame.type)
            if type(frame) is ChatMessageFrame:
                sends = self._sends
                if sends is None:
                    sends = self._sends = SendPipeline(
                        self._flush_sends, limit=SEND_BATCH_MAX, max_batch=SEND_BATCH_MAX
                    )
                await sends.put(frame)
                return
            await self._settle_sends()
            await HANDLERS[frame.type](self, frame)
        except ProtocolError as error:
            await self._settle_sends()
            self.send_error(error, request_id if request_id is not None else _id_of_text(text))
        except Exception:
            logger.exception("conn=%s user=%s frame handling failed", self.conn_id, self.user_id)
            self.send_error(ProtocolError(ErrorCode.INTERNAL), request_id)

    async def on_auth(self, frame: AuthFrame) -> None:
        """``auth`` on a live socket: refresh (PROTOCOL.md section 2)."""
        await self._authenticate(frame.token, frame.id)

    async def on_join(self, frame: JoinFrame) -> None:
        """``join``: subscribe, ask ``chat.join``, answer ``joined`` (PROTOCOL.md section 3)."""
        room = subjects.check_room(frame.room)
        hub, bus = self.node.hub, self.node.bus
        assert bus is not None
        first_local = hub.join_pending(room, self)
        self.rooms[room] = None
        try:
            await bus.ensure_room(room)
            body = JoinRequest(
                room=room,
                user_id=self.user_id,
                username=self.username,
                since=frame.since,
                gateway_id=self.node.gateway_id,
                first_local=first_local,
            )
            answer = await self.node.request_msg(
                subjects.CHAT_JOIN, body.model_dump_json(exclude_none=True).encode()
            )
            headers = answer.headers or {}
            reply = await complete(self.node.request, answer, room=room, user_id=self.user_id)
            seq_header = headers.get(subjects.HDR_SEQ)
            last_seq = int(seq_header) if seq_header is not None else int(json.loads(reply)["last_seq"])
            rev = int(headers.get(subjects.HDR_ROOM_REV, 0))
        except BaseException:
            self._drop_room(room)
            raise
        revoked = self._revoked.pop(room, None) if self._revoked else None
        if revoked is not None and revoked > rev:
            # Removed while this join was in flight, after chat had authorised it.
            if self._drop_room(room):
                self.node.spawn(self._leave_presence([room]))
            raise ProtocolError(ErrorCode.FORBIDDEN, "Removed from the room")
        buffered = hub.join_complete(room, self, last_seq)
        self.rooms[room] = rev
        self.send_reply("joined", reply, frame.id)
        for pending in buffered:
            self._put(pending)

    def _drop_room(self, room: str) -> bool:
        """Take this socket out of ``room`` locally (hub, bus); True if it was the user's last
        local socket there (presence must then be left)."""
        hub, bus = self.node.hub, self.node.bus
        assert bus is not None
        self.rooms.pop(room, None)
        empty, last_of_user = hub.leave(room, self)
        if empty:
            bus.release_room(room)
        return last_of_user

    def revoke_room(self, room: str, reason: str, rev: int) -> None:
        """The user lost the right to read ``room`` at registry revision ``rev`` (PROTOCOL.md
        section 10): unless this socket joined at ``rev`` or later, it leaves the room now and
        gets ``{"type":"removed","room","reason"}``; nothing more of the room reaches it. A join
        in flight is refused when its answer arrives. Idempotent."""
        if room not in self.rooms:
            return
        joined_rev = self.rooms[room]
        if joined_rev is None:
            revoked = self._revoked if self._revoked is not None else {}
            revoked[room] = max(rev, revoked.get(room, 0))
            self._revoked = revoked
            return
        if joined_rev >= rev:
            return
        last_of_user = self._drop_room(room)
        logger.info("conn=%s user=%s room=%s access revoked (%s)", self.conn_id, self.user_id, room, reason)
        self.send("removed", None, room=room, reason=reason)
        if last_of_user:
            self.node.spawn(self._leave_presence([room]))

    async def on_leave(self, frame: LeaveFrame) -> None:
        """``leave``: unsubscribe this socket from the room, answer ``left``."""
        room = subjects.check_room(frame.room)
        if room not in self.rooms:
            raise ProtocolError(ErrorCode.NOT_JOINED)
        last_of_user = self._drop_room(room)
        body = LeaveRequest(
            room=room,
            user_id=self.user_id,
            username=self.username,
            gateway_id=self.node.gateway_id,
            last_local=last_of_user,
        )
        try:
            reply = await self.node.request(subjects.CHAT_LEAVE, body.model_dump_json().encode())
        except ProtocolError as error:
            logger.warning("conn=%s room=%s leave not recorded: %s", self.conn_id, room, error)
            self.send("left", frame.id, room=room)
            return
        self.send_reply("left", reply, frame.id)

    def require_joined(self, room: str) -> None:
        """Raise ``not_joined`` unless this socket is joined to ``room`` (join answered)."""
        if room not in self.rooms or not self.node.hub.is_joined(room, self):
            raise ProtocolError(ErrorCode.NOT_JOINED)

    async def on_chat_message(self, frame: ChatMessageFrame) -> None:
        """``chat_message`` (v2: with ``reply_to``): ``chat.send``, answer ``ack``."""
        reply = await self.node.request(subjects.CHAT_SEND, self._send_body(frame))
        self.send_reply("ack", reply, frame.id)

    async def _flush_sends(self, frames: list[ChatMessageFrame]) -> None:
        """Answer pipelined ``chat_message`` frames in order (:mod:`gateway.send_pipeline`): one
        alone is ``chat.send``, several are ``chat.send.batch`` requests (as many as fit one NATS
        message each, ``max_payload``) whose lines are their answers. Frames queued when the
        socket began closing (revoked, removed) are dropped, as the reader drops frames read
        after that."""
        if self.closing:
            return
        if len(frames) == 1:
            await self._answer(frames[0], self.on_chat_message)
            return
        answers: list[bytes | ProtocolError] = []
        sent: list[int] = []
        bodies: list[bytes] = []
        for index, frame in enumerate(frames):
            try:
                bodies.append(self._send_body(frame))
            except ProtocolError as error:
                answers.append(error)
                continue
            answers.append(b"")
            sent.append(index)
        assert self.node.nc is not None
        budget = max(self.node.nc.max_payload - BATCH_SLACK, 1)
        first = 0
        while first < len(bodies):
            last, size = first + 1, len(bodies[first])
            while last < len(bodies) and size + len(bodies[last]) + 1 <= budget:
                size += len(bodies[last]) + 1
                last += 1
            lines = await self._send_batch(bodies[first:last])
            for index, line in zip(sent[first:last], lines, strict=True):
                answers[index] = line
            first = last
        for frame, answer in zip(frames, answers, strict=True):
            if isinstance(answer, ProtocolError):
                self.send_error(answer, frame.id)
            elif answer.startswith(b'{"type":"error"'):
                self.node.metrics.error(str(json.loads(answer).get("code")))
                self.node.metrics.frame_out("error")
                self._put(Outbound(with_request_id(answer, frame.id)))
            else:
                self.send_reply("ack", answer, frame.id)

    async def _send_batch(self, bodies: list[bytes]) -> list[bytes | ProtocolError]:
        """One ``chat.send.batch``: an answer per body, its ack or error frame, or the error of
        the whole request (``unavailable``) for each. When no chat replica serves the endpoint
        (a rolling upgrade from a version without it) the bodies go one ``chat.send`` at a time."""
        try:
            reply = await self.node.request(
                subjects.CHAT_SEND_BATCH, b'{"sends":[' + b",".join(bodies) + b"]}"
            )
        except ProtocolError as error:
            if not isinstance(error.__cause__, NoRespondersError):
                return [error] * len(bodies)
            answers: list[bytes | ProtocolError] = []
            for body in bodies:
                try:
                    answers.append(await self.node.request(subjects.CHAT_SEND, body))
                except ProtocolError as refused:
                    answers.append(refused)
            return answers
        lines = reply.split(b"\n")
        if len(lines) != len(bodies):
            logger.error("chat.send.batch answered %d lines for %d sends", len(lines), len(bodies))
            return [ProtocolError(ErrorCode.INTERNAL)] * len(bodies)
        return list(lines)

    async def _answer(self, frame: Any, handler: Callable[[Any], Awaitable[None]]) -> None:
        """Run one frame's handler, answering its failure with an ``error`` frame."""
        try:
            await handler(frame)
        except ProtocolError as error:
            self.send_error(error, frame.id)
        except Exception:
            logger.exception("conn=%s user=%s frame handling failed", self.conn_id, self.user_id)
            self.send_error(ProtocolError(ErrorCode.INTERNAL), frame.id)

    def _send_body(self, frame: ChatMessageFrame) -> bytes:
        """The ``chat.send`` body of ``frame`` (a :class:`~shared.internal.SendRequest`).

        Raises:
            ProtocolError: ``invalid_room``, ``not_joined``.
        """
        room = subjects.check_room(frame.room)
        self.require_joined(room)
        # The SendRequest shape, dumped from a dict: the frame was validated a moment ago and
        # chat_service validates the body again (saves a model build on the send path).
        body: dict[str, Any] = {
            "room": room,
            "user_id": self.user_id,
            "username": self.username,
            "message": frame.message,
            "conn_id": self.conn_id,
        }
        if frame.client_msg_id is not None:
            body["client_msg_id"] = frame.client_msg_id
        if frame.reply_to is not None:
            body["reply_to"] = frame.reply_to
        if frame.attachments:
            body["attachments"] = frame.attachments
        return dumps(body).encode()

    async def on_typing(self, frame: TypingFrame) -> None:
        """``typing``: relayed to the room's other sockets, not stored."""
        room = subjects.check_room(frame.room)
        self.require_joined(room)
        assert self.node.nc is not None
        text = encode_frame("typing", None, room=room, user_id=self.user_id, username=self.username)
        try:
            await self.node.nc.publish(
                subjects.deliver_room(room),
                text.encode(),
                headers={
                    subjects.HDR_ROOM: room,
                    subjects.HDR_USER: self.user_id,
                    subjects.HDR_KIND: "typing",
                },
            )
        except Exception as error:
            raise ProtocolError(ErrorCode.UNAVAILABLE) from error


HANDLERS: Final = frame_handlers.table(Connection)


def _decoded(text: str) -> Any:
    """``text`` as JSON, or None when it is not JSON (or nested beyond the parser's limit)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _id_of_text(text: str) -> RequestId:
    """Best-effort ``id`` of a frame that failed validation (for echoing in the error)."""
    return request_id_of(_decoded(text))


def _type_of_text(text: str) -> str | None:
    """Best-effort ``type`` of a frame that failed validation."""
    raw = _decoded(text)
    frame_type = raw.get("type") if isinstance(raw, dict) else None
    return frame_type if isinstance(frame_type, str) else None
