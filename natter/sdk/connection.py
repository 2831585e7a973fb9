"""Opening one authenticated socket, and what a close means (PROTOCOL.md sections 1 and 2).

:func:`open_socket` connects with ``websockets.asyncio.client.connect`` and authenticates with
one of the three methods, returning the socket and its ``auth_success``. A refusal is mapped:
``auth_failed`` "Token expired" -> :class:`TokenRejectedAsExpired` (refresh and connect again),
"Session revoked" -> :class:`~natter.sdk.errors.SessionRevoked`, any other ``auth_failed`` ->
:class:`~natter.sdk.errors.AuthenticationFailed`; anything else (``unavailable`` with close 1013
"auth unavailable", ``rate_limited``, ``auth_timeout``) -> :class:`RetryConnect`.

:func:`close_action` classifies a close after authentication (docs/protocol.md lists the reasons).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from enum import StrEnum
from typing import Any, Literal

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import WebSocketException

from natter.sdk import frames
from natter.sdk.errors import AuthenticationFailed, AuthError, NatterError, SessionRevoked

Frame = dict[str, Any]

#: Largest frame accepted from the server (a recovery ``joined`` can hold 1000 messages).
MAX_FRAME_BYTES = 2**24
#: Seconds to wait for ``auth_success`` once the socket is open.
AUTH_WAIT = 10.0


class AuthMethod(StrEnum):
    """How the socket authenticates (PROTOCOL.md section 2).

    ``first_message`` (default) sends ``{"type":"auth","token":..}`` after connecting, so the token
    never appears in a URL or an access log; ``header`` sends ``Authorization: Bearer``;
    ``query`` puts ``?token=`` in the URL.
    """

    FIRST_MESSAGE = "first_message"
    HEADER = "header"
    QUERY = "query"


class TokenRejectedAsExpired(Exception):
    """``auth_failed`` "Token expired" during the handshake: refresh, then connect again."""


class RetryConnect(Exception):
    """A connect attempt failed in a way worth retrying after a backoff."""


#: Connect failures retried with backoff on the next URL.
CONNECT_FAILURES = (OSError, TimeoutError, WebSocketException, RetryConnect, NatterError, httpx.HTTPError)


class _NoDebug(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The websockets protocol logger without DEBUG: its handshake lines would show a query token."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_WS_LOGGER = _NoDebug(logging.getLogger("natter.sdk.websockets"), {})


async def open_socket(
    url: str,
    token: str,
    *,
    method: AuthMethod,
    auth_id: str,
    open_timeout: float,
    ping_interval: float | None,
) -> tuple[ClientConnection, Frame]:
    """Connect to ``url`` and authenticate with ``token``; returns ``(socket, auth_success)``.

    ``auth_id`` is the ``id`` of the first-message ``auth`` frame.

    Raises:
        TokenRejectedAsExpired, RetryConnect, AuthError: see the module docstring.
        OSError, TimeoutError, websockets exceptions: the connection failed.
    """
    uri, headers = url, None
    if method is AuthMethod.QUERY:
        uri = frames.with_query_token(url, token)
    elif method is AuthMethod.HEADER:
        headers = {"Authorization": f"Bearer {token}"}
    ws = await ws_connect(
        uri,
        additional_headers=headers,
        open_timeout=open_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_interval,
        close_timeout=2,
        max_size=MAX_FRAME_BYTES,
        logger=_WS_LOGGER,
    )
    try:
        async with asyncio.timeout(AUTH_WAIT):
            if method is AuthMethod.FIRST_MESSAGE:
                await ws.send(frames.dumps({**frames.auth_frame(token), "id": auth_id}))
            hello = await _await_auth_success(ws)
    except BaseException:
        with contextlib.suppress(Exception):
            await ws.close()
        raise
    return ws, hello


async def _await_auth_success(ws: ClientConnection) -> Frame:
    while True:
        raw = await ws.recv()
        try:
            frame = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(frame, dict):
            continue
        if frame.get("type") == "auth_success":
            return frame
        if frame.get("type") == "error":
            raise refusal(frame)


def refusal(frame: Frame) -> Exception:
    """The exception for an ``error`` frame received before ``auth_success``."""
    code, message = str(frame.get("code")), str(frame.get("message") or "")
    if code not in ("auth_failed", "token_expired"):
        return RetryConnect(code)
    if code == "token_expired" or "expired" in message.lower():
        return TokenRejectedAsExpired(message)
    if "revoked" in message.lower():
        return SessionRevoked("session revoked", message)
    return AuthenticationFailed("auth failed", message)


#: Close 1008 reasons that end the session (PROTOCOL.md section 2, docs/protocol.md).
FATAL_CLOSES: dict[str, type[AuthError]] = {
    "auth failed": AuthenticationFailed,
    "session revoked": SessionRevoked,
}


def close_action(code: int, reason: str) -> tuple[Literal["stop", "refresh", "reconnect"], AuthError | None]:
    """What to do after a socket closed with ``(code, reason)``.

    ``("stop", error)`` for 1008 "auth failed" / "session revoked"; ``("refresh", None)`` for 1008
    "token expired" (refresh the token, then reconnect); ``("reconnect", None)`` for anything else
    (1006 abnormal, 1011, 1012 service restart, 1013, 1008 "rate limit abuse"...).
    """
    if code == 1008:
        fatal = FATAL_CLOSES.get(reason)
        if fatal is not None:
            return "stop", fatal(reason)
        if reason == "token expired":
            return "refresh", None
    return "reconnect", None
