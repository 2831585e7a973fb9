"""The asyncio WebSocket client: requests, pushed frames, token refresh and failover.

One :class:`NatterClient` keeps one socket to one of several gateway URLs (PROTOCOL.md
section 1) and survives the loss of it:

- Requests (``join``, ``send``, ``history``...) carry a fresh ``id`` each time they are put on a
  socket; the answer with that ``id`` resolves the caller's future, an ``error`` answer raises a
  :class:`~natter.sdk.errors.RequestError` subclass. ``rate_limited`` and ``unavailable`` answers
  are retried (after ``retry_after`` / a jittered backoff) until the request's deadline.
- Pushed frames are read with ``async for frame in client``; ``message`` frames pass through a
  :class:`~natter.sdk.dedup.Sequencer` so each room's messages arrive once and in ``seq`` order,
  gaps being filled with ``join`` + ``since`` before later frames are handed out.
- The access token is refreshed over HTTP before it expires and presented on the live socket
  (``{"type":"auth","token":..}``, PROTOCOL.md section 2).
- Any close but 1008 "auth failed" / "session revoked" reconnects with full-jitter backoff
  (base 0.2 s, cap 10 s), rotating through the URLs; then every joined room is re-joined with
  ``since`` = the last ``seq`` seen, and every unanswered request (every unacked ``send``, with
  its same ``client_msg_id``) is sent again: the server's idempotency (PROTOCOL.md section 4)
  turns a resent message into the original ``ack``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidURI

from natter.sdk import frames
from natter.sdk.backoff import Backoff
from natter.sdk.connection import (
    CONNECT_FAILURES,
    AuthMethod,
    RetryConnect,
    TokenRejectedAsExpired,
    close_action,
    open_socket,
)
from natter.sdk.dedup import ROOM_EVENT_TYPES, Outcome, Sequencer
from natter.sdk.errors import (
    AuthenticationFailed,
    AuthError,
    ClientClosed,
    ConnectionLost,
    ConnectTimeout,
    NatterError,
    NotJoined,
    RequestError,
    RequestTimeout,
)
from natter.sdk.http import NatterHTTP
from natter.sdk.requests import Request, RequestTable
from natter.sdk.tokens import Tokens, jwt_claims, refresh_at

logger = logging.getLogger(__name__)

Frame = dict[str, Any]

#: A connection that lived this long (seconds) resets the reconnect backoff.
STABLE_AFTER = 5.0
#: Reconnecting refreshes first when the access token expires within this many seconds.
MIN_TOKEN_VALIDITY = 5.0
#: ``join`` errors after which a room is given up (the error is handed to the iterator).
ROOM_GONE_CODES = frozenset({"forbidden", "room_not_found", "invalid_room"})

_END = object()


@dataclass(eq=False)
class _Connection:
    """One authenticated socket and its outgoing queue (drained by one writer task)."""

    ws: ClientConnection
    url: str
    token: str
    out: asyncio.Queue[str]
    live: bool = False


class NatterClient:
    """An asyncio client for natter's WebSocket protocol (PROTOCOL.md v1).

    Args:
        urls: one gateway WebSocket URL (``ws://127.0.0.1:8000/ws``) or several; the client
            uses one at a time and moves to the next after a failure.
        tokens: :class:`~natter.sdk.tokens.Tokens` from :meth:`NatterHTTP.login`, or a bare access
            token (no refresh possible then).
        username / password: log in over HTTP at :meth:`connect` instead of giving ``tokens``.
        http: the :class:`NatterHTTP` used for login and refresh; by default one is made for the
            gateways' HTTP API (same hosts as ``urls``) and closed with the client.
        auth: an :class:`AuthMethod` (default ``first_message``).
        request_timeout: seconds a request may take, retries included (default 10).
        send_deadline: seconds :meth:`send` keeps trying, reconnects and retries included (30).
        open_timeout: seconds for one WebSocket opening handshake (5).
        backoff_base / backoff_cap: full-jitter reconnect backoff, seconds (0.2 / 10).
        refresh_lead / refresh_fraction: refresh ``refresh_lead`` seconds before expiry, but not
            before ``refresh_fraction`` of the token's lifetime (60 / 0.8).
        ping_interval: seconds between WebSocket pings from the client (``None``: none).
        pick: ``"first"`` starts with ``urls[0]``; ``"random"`` with a random one (spreads many
            clients over the gateways). Either way a failure moves on to the next URL.

    Use ``async with NatterClient(...) as client:`` or ``await client.connect()`` /
    ``await client.close()``. Pushed frames: ``async for frame in client:``.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        tokens: Tokens | str | None = None,
        username: str | None = None,
        password: str | None = None,
        http: NatterHTTP | None = None,
        auth: AuthMethod | str = AuthMethod.FIRST_MESSAGE,
        request_timeout: float = 10.0,
        send_deadline: float = 30.0,
        open_timeout: float = 5.0,
        backoff_base: float = 0.2,
        backoff_cap: float = 10.0,
        refresh_lead: float = 60.0,
        refresh_fraction: float = 0.8,
        ping_interval: float | None = 20.0,
        pick: str = "first",
    ) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise ValueError("at least one gateway URL is needed")
        self.auth_method = AuthMethod(auth)
        self.request_timeout = request_timeout
        self.send_deadline = send_deadline
        self.open_timeout = open_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.refresh_lead = refresh_lead
        self.refresh_fraction = refresh_fraction
        self.ping_interval = ping_interval
        self._owns_http = http is None
        self.http = http or NatterHTTP([frames.http_base_url(url) for url in self.urls])
        if isinstance(tokens, str):
            tokens = Tokens.from_access_token(tokens)
        if tokens is not None:
            self.http.tokens = tokens
        self._credentials = (username, password) if username and password else None

        #: Identity from the last ``auth_success``.
        self.user_id = ""
        self.username = ""
        self.session_id: str | None = None
        #: Expiry (Unix seconds) of the token the socket is authenticated with.
        self.expires_at = 0.0
        #: URL of the current socket (``None`` while disconnected).
        self.url: str | None = None
        #: Number of successful authentications so far (1 + reconnects).
        self.connections = 0

        self._issued_at = 0.0
        if pick not in ("first", "random"):
            raise ValueError("pick must be 'first' or 'random'")
        self._url_index = secrets.randbelow(len(self.urls)) if pick == "random" else 0
        self._conn: _Connection | None = None
        self._seq = Sequencer()
        self._joined: set[str] = set()
        self._requests = RequestTable(
            id_prefix=secrets.token_hex(3) + "-",
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            retry_hook=self._retry_not_joined,
        )
        self._fills: dict[str, tuple[asyncio.Task[None], _Connection]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._live = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._closed = False
        self._force_refresh = False

    # --- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> NatterClient:
        return await self.connect()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self, timeout: float = 30.0) -> NatterClient:
        """Start the connection loop and wait until the first socket is authenticated and live.

        Raises:
            ConnectTimeout: not connected within ``timeout`` seconds (the client is closed).
            AuthError: the credentials or token were refused.
            HTTPError / GatewayUnreachable: the HTTP login failed.
        """
        self._check_usable()
        if self._runner is None:
            if self.http.tokens is None:
                if self._credentials is None:
                    raise AuthenticationFailed("not logged in", "give tokens or username and password")
                await self.http.login(*self._credentials)
            self._runner = asyncio.create_task(self._run(), name="natter-client")
        try:
            await self.wait_connected(timeout)
        except TimeoutError:
            await self.close()
            raise ConnectTimeout(f"not connected within {timeout}s to {self.urls}") from None
        return self

    async def wait_connected(self, timeout: float | None = None) -> str:
        """Wait until a socket is authenticated and re-synchronised; returns its URL.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
            AuthError / ClientClosed: the client stopped.
        """
        async with asyncio.timeout(timeout):
            while True:
                self._check_usable()
                conn = self._conn
                if conn is not None and conn.live:
                    return conn.url
                self._live.clear()
                await self._live.wait()

    @property
    def connected(self) -> bool:
        """Whether a socket is authenticated and live right now."""
        return self._conn is not None and self._conn.live

    @property
    def rooms(self) -> set[str]:
        """Rooms this client has joined (re-joined after every reconnect)."""
        return set(self._joined)

    def last_seq(self, room: str) -> int | None:
        """The last ``seq`` of ``room`` handed to the iterator (``None``: none yet)."""
        return self._seq.last_seq(room)

    async def close(self) -> None:
        """Close the socket (1000), stop reconnecting, fail pending requests with
        :class:`ClientClosed` and end iteration. Idempotent."""
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(1000, "client closed"), 3)
        runner = self._runner
        if runner is not None and not runner.done():
            runner.cancel()
            await asyncio.wait([runner])
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        self._requests.fail_all(ClientClosed("client closed"))
        self._events.put_nowait(_END)
        self._live.set()
        if self._owns_http:
            await self.http.aclose()

    def _check_usable(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise ClientClosed("client closed")

    def _stop(self, error: BaseException) -> None:
        """End the session with ``error`` (raised by iteration and every pending request)."""
        if self._fatal is None and not self._closed:
            self._fatal = error
            logger.warning("natter: client stopped: %s", error)
        self._requests.fail_all(error)
        self._events.put_nowait(_END)
        self._live.set()

    # --- pushed frames --------------------------------------------------------------------
    def __aiter__(self) -> NatterClient:
        return self

    async def __anext__(self) -> Frame:
        item = await self._events.get()
        if item is _END:
            self._events.put_nowait(_END)
            if self._fatal is not None:
                raise self._fatal
            raise StopAsyncIteration
        frame: Frame = item
        return frame

    async def recv(self, timeout: float | None = None) -> Frame:
        """The next pushed frame (as ``async for`` yields it).

        Raises:
            TimeoutError: none within ``timeout`` seconds.
            ClientClosed / AuthError: the client was closed / stopped.
        """
        try:
            async with asyncio.timeout(timeout):
                return await self.__anext__()
        except StopAsyncIteration:
            raise ClientClosed("client closed") from None

    def _emit(self, frame: Frame) -> None:
        self._events.put_nowait(frame)

    def _emit_outcome(self, room: str, outcome: Outcome) -> None:
        for frame in outcome.deliver:
            self._emit(frame)
        if outcome.fill is not None:
            self._start_fill(room)

    # --- requests -------------------------------------------------------------------------
    async def ping(self) -> Frame:
        """``ping`` -> the ``pong`` answer."""
        return await self._request(frames.ping_frame(), kind="ping")

    async def join(
        self, room: str, since: int | None = None, *, replay: bool = True, timeout: float | None = None
    ) -> Frame:
        """Join ``room``; returns the ``joined`` answer (``last_seq``, ``online``, ``messages``,
        ``recovered``).

        The answer's messages are also handed to the iterator as ``message`` frames (those not
        seen yet): without ``since`` the latest 50 (``replay=False``: none), with ``since`` every
        message after it. Joining a room already joined re-synchronises it from the last ``seq``
        seen. The room is re-joined after every reconnect until :meth:`leave`.

        Raises:
            Forbidden / InvalidRoom / RoomNotFound / RequestError: the server's answer.
            RequestTimeout: no answer within ``timeout`` (default ``request_timeout``).
        """
        self._check_usable()
        new = not self._seq.tracked(room)
        if new:
            self._seq.track(room)
        elif since is None:
            since = self._seq.last_seq(room)

        def on_answer(answer: Frame) -> None:
            self._on_joined(room, answer, since, replay)

        try:
            return await self._request(
                frames.join_frame(room, since), kind="join", timeout=timeout, on_answer=on_answer
            )
        except BaseException:
            if new and room not in self._joined:
                self._seq.forget(room)
            raise

    async def leave(self, room: str, *, timeout: float | None = None) -> Frame:
        """Leave ``room``: returns the ``left`` answer; its frames stop at once."""
        self._check_usable()
        self._joined.discard(room)
        self._seq.forget(room)
        fill = self._fills.pop(room, None)
        if fill is not None:
            fill[0].cancel()
        try:
            return await self._request(frames.leave_frame(room), kind="leave", timeout=timeout)
        except NotJoined:
            return {"type": "left", "room": room}

    async def send(
        self,
        room: str,
        text: str,
        client_msg_id: str | None = None,
        *,
        reply_to: int | None = None,
        deadline: float | None = None,
    ) -> Frame:
        """Send a chat message; returns its ``ack`` (``seq``, ``message_id``, ``timestamp``).

        ``client_msg_id`` (default: a new UUID4) is the idempotency key: every retry and every
        resend after a reconnect uses the same one, so the message is stored once and the ack is
        the original one. ``unavailable`` and ``rate_limited`` answers are retried until
        ``deadline`` seconds (default ``send_deadline``, 30) have passed.

        Raises:
            NotJoined / ValidationFailed / ... : the server refused it.
            Unavailable / RateLimited: still the answer when the deadline passed.
            RequestTimeout: no answer before the deadline.
        """
        msg_id = client_msg_id or str(uuid.uuid4())
        return await self._request(
            frames.chat_message_frame(room, text, msg_id, reply_to),
            kind="send",
            timeout=self.send_deadline if deadline is None else deadline,
        )

    async def edit(
        self,
        room: str,
        target: int,
        text: str,
        client_msg_id: str | None = None,
        *,
        deadline: float | None = None,
    ) -> Frame:
        """Edit your message ``target`` (v2); returns the ``ack`` (``seq`` null: same text).
        Retried like :meth:`send`, with the same ``client_msg_id``.

        Raises:
            Forbidden (not the author), MessageNotFound, ValidationFailed, ...
        """
        frame = frames.edit_frame(room, target, text, client_msg_id or str(uuid.uuid4()))
        return await self._request(
            frame, kind="send", timeout=self.send_deadline if deadline is None else deadline
        )

    async def delete(
        self, room: str, target: int, client_msg_id: str | None = None, *, deadline: float | None = None
    ) -> Frame:
        """Delete message ``target`` for good (v2: the author, a moderator or the owner)."""
        frame = frames.delete_frame(room, target, client_msg_id or str(uuid.uuid4()))
        return await self._request(
            frame, kind="send", timeout=self.send_deadline if deadline is None else deadline
        )

    async def react(
        self,
        room: str,
        target: int,
        emoji: str,
        *,
        remove: bool = False,
        client_msg_id: str | None = None,
        deadline: float | None = None,
    ) -> Frame:
        """Add (or ``remove``) your ``emoji`` on message ``target`` (v2); ``seq`` null in the ack
        when it changes nothing."""
        frame = frames.react_frame(
            room, target, emoji, "remove" if remove else "add", client_msg_id or str(uuid.uuid4())
        )
        return await self._request(
            frame, kind="send", timeout=self.send_deadline if deadline is None else deadline
        )

    async def read(self, room: str, seq: int, *, timeout: float | None = None) -> Frame:
        """Set your read marker in ``room`` to ``seq`` (v2). It never moves backwards; returns
        ``{"type":"read_marker","room","seq","unread"}`` with the marker as it is now. Your
        other sockets get the same frame without ``id`` (handed to the iterator). Safe to
        retry, so it is resent after a reconnect.

        Raises:
            ValidationFailed (``seq`` < 0), NotJoined / RoomNotFound / Forbidden, ...
        """
        return await self._request(frames.read_frame(room, seq), kind="read", timeout=timeout)

    async def history(
        self,
        room: str,
        *,
        before: int | None = None,
        limit: int = 50,
        thread: int | None = None,
        timeout: float | None = None,
    ) -> Frame:
        """A page of history: ``{"type":"history","room","messages","has_more"}`` with up to
        ``limit`` (1..100) messages with ``seq < before`` (or the latest), oldest first, each in
        its current state (v2); ``thread``: the replies to that message. Not handed to the
        iterator."""
        return await self._request(
            frames.history_frame(room, before, limit, thread), kind="history", timeout=timeout
        )

    async def presence(self, room: str, *, timeout: float | None = None) -> Frame:
        """``{"type":"presence","room","online":[{"user_id","username"}]}``."""
        return await self._request(frames.presence_frame(room), kind="presence", timeout=timeout)

    async def typing(self, room: str) -> None:
        """Tell the room's other members this user is typing. Not answered and not queued: while
        disconnected it is dropped. An error answer (``not_joined``) is logged, not raised."""
        self._check_usable()
        self._requests.send_unanswered(frames.typing_frame(room))

    async def notifications(
        self, *, unread_only: bool = False, limit: int = 50, timeout: float | None = None
    ) -> Frame:
        """``{"type":"notifications","unread","items"}``: the latest ``limit`` (1..500)."""
        return await self._request(
            frames.notifications_frame(unread_only, limit), kind="notifications", timeout=timeout
        )

    async def mark_read(
        self, ids: Sequence[str] | None = None, *, all: bool = False, timeout: float | None = None
    ) -> Frame:
        """Mark ``ids`` (or ``all=True``) read; returns the new ``notifications`` summary."""
        return await self._request(
            frames.mark_read_frame(list(ids or []), all), kind="mark_read", timeout=timeout
        )

    async def _request(
        self,
        frame: Frame,
        *,
        kind: str,
        timeout: float | None = None,
        on_answer: Callable[[Frame], None] | None = None,
        early: bool = False,
        resend: bool = True,
    ) -> Frame:
        """:meth:`RequestTable.request` for this client (``request_timeout`` by default)."""
        self._check_usable()
        if self._runner is None:
            raise NatterError("not connected: call connect() first (or use `async with`)")
        return await self._requests.request(
            frame,
            kind=kind,
            timeout=self.request_timeout if timeout is None else timeout,
            on_answer=on_answer,
            early=early,
            resend=resend,
        )

    def _retry_not_joined(self, request: Request, error: RequestError) -> float | None:
        """``not_joined`` on a send to a room we joined: the server lost our membership (a re-join
        after a reconnect failed). Re-join, then retry the send."""
        room = request.frame.get("room")
        if error.code != "not_joined" or request.kind != "send" or room not in self._joined:
            return None
        assert isinstance(room, str)
        self._start_fill(room)
        return request.backoff.next_delay() + 0.05

    # --- rooms: joins, fills --------------------------------------------------------------
    def _on_joined(self, room: str, answer: Frame, since: int | None, replay: bool) -> None:
        """A ``joined`` answer: runs in the reader, before any later frame is handled."""
        if not self._seq.tracked(room):
            return
        self._joined.add(room)
        self._emit_outcome(room, self._seq.joined(room, answer, since, replay=replay))

    def _start_fill(self, room: str) -> asyncio.Task[None] | None:
        """Re-join ``room`` with ``since`` = last seq (gap, reconnect, lost membership); one at a
        time per room and socket."""
        conn = self._conn
        if conn is None or self._closed:
            return None
        running = self._fills.get(room)
        if running is not None and not running[0].done() and running[1] is conn:
            return running[0]
        self._seq.begin_fill(room)
        task = self._spawn(self._fill(room, conn))
        self._fills[room] = (task, conn)
        return task

    async def _fill(self, room: str, conn: _Connection) -> None:
        backoff = Backoff(self.backoff_base, self.backoff_cap)
        while self._conn is conn and self._seq.tracked(room):
            since = self._seq.last_seq(room)

            def on_answer(answer: Frame, since: int | None = since) -> None:
                self._on_joined(room, answer, since, True)

            try:
                await self._request(
                    frames.join_frame(room, since),
                    kind="join",
                    early=True,
                    resend=False,
                    on_answer=on_answer,
                )
            except (ConnectionLost, ClientClosed, AuthError):
                return
            except RequestError as error:
                if error.code in ROOM_GONE_CODES:
                    self._room_gone(room, error)
                    return
                logger.info("natter: re-join of room=%s failed: %s", room, error.code)
            except RequestTimeout:
                logger.info("natter: re-join of room=%s timed out", room)
            else:
                state = self._seq.state(room)
                if state is None or not state.filling:
                    return
                continue  # frames are still held past a newer gap
            await asyncio.sleep(backoff.next_delay())

    def _room_gone(self, room: str, error: RequestError) -> None:
        """A joined room can no longer be joined (e.g. removed from a private room)."""
        self._joined.discard(room)
        self._seq.forget(room)
        frame = {key: value for key, value in error.frame.items() if key != "id"}
        self._emit({**frame, "room": room})

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- the connection loop --------------------------------------------------------------
    async def _run(self) -> None:
        backoff = Backoff(self.backoff_base, self.backoff_cap)
        loop = asyncio.get_running_loop()
        expired_in_a_row = 0
        try:
            while not self._closed:
                url = self.urls[self._url_index]
                try:
                    await self._ensure_token()
                    conn = await self._open(url)
                except (AuthError, InvalidURI) as error:
                    self._stop(error)
                    return
                except TokenRejectedAsExpired:
                    expired_in_a_row += 1
                    if expired_in_a_row > 3:
                        self._stop(AuthenticationFailed("token expired", "refreshed tokens keep expiring"))
                        return
                    self._force_refresh = True
                    continue
                except CONNECT_FAILURES as error:
                    delay = backoff.next_delay()
                    logger.info(
                        "natter: connect to %s failed (%s); next try in %.2fs",
                        frames.redact(url),
                        type(error).__name__,
                        delay,
                    )
                    self._rotate()
                    await asyncio.sleep(delay)
                    continue
                expired_in_a_row = 0
                started = loop.time()
                code, reason = await self._serve(conn)
                if self._closed:
                    return
                if loop.time() - started >= STABLE_AFTER:
                    backoff.reset()
                action, fatal = close_action(code, reason)
                if fatal is not None:
                    self._stop(fatal)
                    return
                self._force_refresh = action == "refresh"
                delay = backoff.next_delay()
                logger.info(
                    "natter: socket to %s closed (%s %s); reconnecting in %.2fs",
                    frames.redact(url),
                    code,
                    reason,
                    delay,
                )
                self._rotate()
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.exception("natter: connection loop failed")
            self._stop(error)

    def _rotate(self) -> None:
        self._url_index = (self._url_index + 1) % len(self.urls)

    async def _ensure_token(self) -> None:
        """Refresh before connecting when the token is (nearly) expired or was refused as such."""
        tokens = self.http.tokens
        if tokens is None:
            raise AuthenticationFailed("not logged in")
        if not (self._force_refresh or tokens.expires_within(MIN_TOKEN_VALIDITY)):
            return
        if not tokens.refresh_token:
            if self._force_refresh or tokens.expires_within(0):
                raise AuthenticationFailed("token expired", "no refresh token")
            return
        try:
            await self.http.refresh_tokens(stale_access=tokens.access_token)
        except AuthError:
            raise
        except (NatterError, httpx.HTTPError) as error:
            raise RetryConnect("refresh failed") from error
        self._force_refresh = False

    async def _open(self, url: str) -> _Connection:
        """Open and authenticate a socket to ``url`` (:func:`~natter.sdk.connection.open_socket`)."""
        tokens = self.http.tokens
        assert tokens is not None
        ws, hello = await open_socket(
            url,
            tokens.access_token,
            method=self.auth_method,
            auth_id=self._requests.new_id(),
            open_timeout=self.open_timeout,
            ping_interval=self.ping_interval,
        )
        self._apply_hello(hello, tokens.access_token)
        return _Connection(ws=ws, url=url, token=tokens.access_token, out=asyncio.Queue())

    async def _serve(self, conn: _Connection) -> tuple[int, str]:
        """Run one authenticated socket until it closes; returns (close code, reason)."""
        self.connections += 1
        self.url = conn.url
        self._conn = conn
        self._requests.attach(conn.out.put_nowait)
        logger.info(
            "natter: connected to %s user=%s (connection %d)",
            frames.redact(conn.url),
            self.user_id,
            self.connections,
        )
        helpers = [
            asyncio.create_task(self._write_loop(conn)),
            asyncio.create_task(self._resync(conn)),
            asyncio.create_task(self._refresh_loop(conn)),
        ]
        try:
            await self._read_loop(conn)
        finally:
            self._conn = None
            self.url = None
            self._live.clear()
            for task in helpers:
                task.cancel()
            await asyncio.wait(helpers)
            self._requests.detach()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(), 3)
        return conn.ws.close_code or 1006, conn.ws.close_reason or ""

    async def _resync(self, conn: _Connection) -> None:
        """Re-join every joined room with ``since``, then send every waiting request in order."""
        fills = [task for room in list(self._joined) if (task := self._start_fill(room)) is not None]
        if fills:
            await asyncio.wait(fills, timeout=self.request_timeout)
        if self._conn is not conn:
            return
        conn.live = True
        self._requests.go_live()
        self._live.set()

    async def _write_loop(self, conn: _Connection) -> None:
        try:
            while True:
                text = await conn.out.get()
                await conn.ws.send(text)
        except ConnectionClosed:
            return

    async def _read_loop(self, conn: _Connection) -> None:
        try:
            async for raw in conn.ws:
                if not isinstance(raw, str):
                    continue
                try:
                    frame = json.loads(raw)
                except ValueError:
                    logger.warning("natter: ignoring a non-JSON frame")
                    continue
                if isinstance(frame, dict):
                    try:
                        self._on_frame(frame)
                    except Exception:
                        logger.exception("natter: handling a %s frame failed", frame.get("type"))
        except ConnectionClosed:
            return

    def _on_frame(self, frame: Frame) -> None:
        """Route one server frame: an answer, a ``message``, or another pushed frame."""
        frame_type = frame.get("type")
        if frame.get("id") is not None:
            if not self._requests.answer(frame):
                logger.debug("natter: dropping an answer to an unknown request")
            return
        if frame_type in ROOM_EVENT_TYPES:
            room = frame.get("room")
            if isinstance(room, str):
                self._emit_outcome(room, self._seq.push(frame))
            return
        if frame_type == "auth_success":
            self._apply_hello(frame, None)
            return
        if frame_type == "error" and frame.get("code") in ("token_expired", "auth_failed"):
            logger.info("natter: server says %s; the close follows", frame.get("code"))
            return
        self._emit(frame)

    # --- tokens ---------------------------------------------------------------------------
    def _apply_hello(self, hello: Frame, token: str | None) -> None:
        """Take identity and expiry from an ``auth_success``."""
        self.user_id = str(hello.get("user_id") or self.user_id)
        self.username = str(hello.get("username") or self.username)
        session_id = hello.get("session_id")
        self.session_id = session_id if isinstance(session_id, str) else None
        expires_at = hello.get("expires_at")
        if isinstance(expires_at, int | float) and not isinstance(expires_at, bool):
            self.expires_at = float(expires_at)
        if token is not None:
            iat = jwt_claims(token).get("iat")
            now = time.time()
            self._issued_at = float(iat) if isinstance(iat, int | float) and iat <= now else now

    async def _refresh_loop(self, conn: _Connection) -> None:
        """Refresh the token before it expires and present it on this socket."""
        backoff = Backoff(max(self.backoff_base, 0.5), self.backoff_cap)
        while self._conn is conn:
            if self.expires_at <= 0:
                return
            when = refresh_at(
                issued_at=self._issued_at,
                expires_at=self.expires_at,
                lead=self.refresh_lead,
                fraction=self.refresh_fraction,
            )
            await asyncio.sleep(max(0.0, when - time.time()))
            tokens = self.http.tokens
            if tokens is None or not tokens.refresh_token:
                logger.info("natter: no refresh token; the socket ends when the token expires")
                return
            try:
                fresh = await self.http.refresh_tokens(stale_access=conn.token)
            except AuthError as error:
                logger.warning("natter: token refresh refused: %s", error)
                return
            except (NatterError, httpx.HTTPError) as error:
                logger.info("natter: token refresh failed (%s), retrying", type(error).__name__)
                await asyncio.sleep(backoff.next_delay())
                continue
            try:
                answer = await self._request(
                    frames.auth_frame(fresh.access_token), kind="auth", early=True, resend=False
                )
            except (ConnectionLost, ClientClosed, AuthError):
                return
            except (RequestError, RequestTimeout) as error:
                logger.info("natter: auth on the live socket failed (%s), retrying", error)
                await asyncio.sleep(backoff.next_delay())
                continue
            conn.token = fresh.access_token
            self._apply_hello(answer, fresh.access_token)
            backoff.reset()
            logger.info("natter: socket re-authenticated, expires_at=%d", self.expires_at)
