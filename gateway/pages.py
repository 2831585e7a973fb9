"""Completing ``joined`` and ``history`` answers that did not fit one NATS message.

A NATS message is at most ``max_payload`` (1 MiB by default); 1000 messages of 4000 characters
can be 24 MB of JSON. chat_service puts what fits in its reply and says what is missing in
headers (``Natter-More-After``: every message after this seq up to the frame's ``last_seq``;
``Natter-More-Before`` + ``Natter-More-Count``: that many messages before this seq).
:func:`complete` fetches the rest with ``chat.history`` pages (each again as large as fits) and
returns the single frame the protocol promises (PROTOCOL.md sections 3 and 4: ``joined`` with
``since`` holds *every* missing message, ``history`` up to ``limit``). Frames that fit are
returned as they are, never decoded.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

from nats.aio.msg import Msg

from shared import subjects
from shared.internal import HistoryRequest
from shared.protocol import dumps

#: ``(subject, body) -> reply bytes``: the gateway's request to a service.
Requester = Callable[[str, bytes], Awaitable[bytes]]
#: Pages fetched for one answer at most (each is as large as a NATS message allows).
MAX_PAGES: Final = 64


async def complete(request: Requester, msg: Msg, *, room: str, user_id: str) -> bytes:
    """The whole frame of a ``chat.join`` or ``chat.history`` reply ``msg``.

    Raises:
        ProtocolError: a page request's error (``unavailable``, ``forbidden``...).
    """
    headers = msg.headers or {}
    after = headers.get(subjects.HDR_MORE_AFTER)
    before = headers.get(subjects.HDR_MORE_BEFORE)
    if after is None and before is None:
        return msg.data
    frame: dict[str, Any] = json.loads(msg.data)
    messages: list[dict[str, Any]] = frame["messages"]
    if after is not None:
        messages.extend(
            await _newer(request, room=room, user_id=user_id, after=int(after), until=frame["last_seq"])
        )
    if before is not None:
        count = int(headers.get(subjects.HDR_MORE_COUNT, "0"))
        messages[0:0] = await _older(request, room=room, user_id=user_id, before=int(before), count=count)
    return dumps(frame).encode()


async def _page(request: Requester, body: HistoryRequest) -> list[dict[str, Any]]:
    reply = await request(subjects.CHAT_HISTORY, body.model_dump_json(exclude_none=True).encode())
    found: list[dict[str, Any]] = json.loads(reply)["messages"]
    return found


async def _newer(
    request: Requester, *, room: str, user_id: str, after: int, until: int
) -> list[dict[str, Any]]:
    """Messages with ``after < seq <= until``, oldest first."""
    out: list[dict[str, Any]] = []
    cursor = after
    for _ in range(MAX_PAGES):
        if cursor >= until:
            break
        body = HistoryRequest(room=room, user_id=user_id, after=cursor, limit=min(1000, until - cursor))
        page = [m for m in await _page(request, body) if m["seq"] <= until]
        if not page:
            break
        out.extend(page)
        cursor = int(page[-1]["seq"])
    return out


async def _older(
    request: Requester, *, room: str, user_id: str, before: int, count: int
) -> list[dict[str, Any]]:
    """The ``count`` messages before ``before``, oldest first."""
    out: list[dict[str, Any]] = []
    cursor = before
    for _ in range(MAX_PAGES):
        if count <= 0 or cursor <= 1:
            break
        body = HistoryRequest(room=room, user_id=user_id, before=cursor, limit=min(1000, count))
        page = await _page(request, body)
        if not page:
            break
        out[0:0] = page
        count -= len(page)
        cursor = int(page[0]["seq"])
    return out
