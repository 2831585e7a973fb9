"""natter's Python client SDK (asyncio): the HTTP API and the WebSocket protocol.

::

    from natter.sdk import NatterClient, NatterHTTP

    async with NatterHTTP("http://127.0.0.1:8000") as http:
        tokens = await http.login("alice", "correct horse 1")
    async with NatterClient(["ws://127.0.0.1:8000/ws"], tokens=tokens) as client:
        await client.join("general")
        await client.send("general", "Hello")
        async for frame in client:
            ...

See docs/sdk.md. Depends only on ``httpx`` and ``websockets``.
"""

from __future__ import annotations

from natter.sdk.backoff import Backoff, full_jitter
from natter.sdk.client import NatterClient
from natter.sdk.connection import AuthMethod
from natter.sdk.dedup import Outcome, Sequencer
from natter.sdk.errors import (
    AuthenticationFailed,
    AuthError,
    ClientClosed,
    ConnectionLost,
    ConnectTimeout,
    Forbidden,
    GatewayUnreachable,
    HTTPError,
    InternalError,
    InvalidJSON,
    InvalidRoom,
    MessageNotFound,
    Muted,
    NatterError,
    NotJoined,
    RateLimited,
    RequestError,
    RequestTimeout,
    RoomNotFound,
    SessionRevoked,
    Unavailable,
    UnknownType,
    UnsupportedFrame,
    ValidationFailed,
)
from natter.sdk.http import NatterHTTP
from natter.sdk.tokens import Tokens
from natter.sdk.view import RoomView

__all__ = [
    "AuthError",
    "AuthMethod",
    "AuthenticationFailed",
    "Backoff",
    "ClientClosed",
    "ConnectTimeout",
    "ConnectionLost",
    "Forbidden",
    "GatewayUnreachable",
    "HTTPError",
    "InternalError",
    "InvalidJSON",
    "InvalidRoom",
    "MessageNotFound",
    "Muted",
    "NatterClient",
    "NatterError",
    "NatterHTTP",
    "NotJoined",
    "Outcome",
    "RateLimited",
    "RequestError",
    "RequestTimeout",
    "RoomNotFound",
    "RoomView",
    "Sequencer",
    "SessionRevoked",
    "Tokens",
    "Unavailable",
    "UnknownType",
    "UnsupportedFrame",
    "ValidationFailed",
    "full_jitter",
]
