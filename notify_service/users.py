"""Resolving users through auth_service (``auth.lookup``, docs/subjects.md).

notify_service keeps no user table of its own (services never import each other, DESIGN.md):
it asks ``auth.lookup`` with ``{"username"}`` (case-insensitive) or ``{"user_id"}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.client import Client

from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.nats_client import request_json


@dataclass(frozen=True, slots=True)
class UserRef:
    """A user as ``auth.lookup`` answers it."""

    user_id: str
    username: str


async def lookup_user(
    nc: Client, *, timeout: float, username: str | None = None, user_id: str | None = None
) -> UserRef:
    """Resolve one user by ``username`` or ``user_id`` (exactly one must be given).

    Raises:
        ProtocolError: ``not_found`` ("User not found"); ``unavailable`` when auth_service does
            not answer within ``timeout`` seconds; ``internal`` for a malformed answer.
    """
    if (username is None) == (user_id is None):
        raise ValueError("give exactly one of username / user_id")
    body = {"username": username} if username is not None else {"user_id": user_id}
    try:
        reply = await request_json(nc, subjects.AUTH_LOOKUP, body, timeout=timeout)
    except ProtocolError as error:
        if error.code is ErrorCode.NOT_FOUND:
            raise ProtocolError(ErrorCode.NOT_FOUND, "User not found") from error
        raise
    if not isinstance(reply, dict):
        raise ProtocolError(ErrorCode.INTERNAL)
    found_id = reply.get("user_id")
    found_name = reply.get("username")
    if not isinstance(found_id, str) or not isinstance(found_name, str):
        raise ProtocolError(ErrorCode.INTERNAL)
    return UserRef(user_id=subjects.check_user_id(found_id), username=found_name)
