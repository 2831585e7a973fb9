"""Who may do what to whom in a room (PROTOCOL.md section 10), as pure functions.

Roles: ``owner`` (who created a private room), ``moderator``, ``member``. Public rooms have no
owner; a service or admin token acts as the owner of any room. Rules:

* adding to a private room: the owner or a moderator;
* removing, banning and muting: the owner or a moderator; a moderator cannot act on the owner or
  another moderator, and nobody acts on the owner; anyone may remove themselves;
* changing a role: the owner only;
* deleting someone else's message: the owner or a moderator;
* a direct message has exactly its two members: adding, removing, banning, muting, role changes
  and leaving are refused (``conflict``).
"""

from __future__ import annotations

from typing import Literal

from chat_service.rooms import Room
from shared.errors import ErrorCode, ProtocolError

Action = Literal["add", "remove", "ban", "unban", "mute", "unmute", "role", "leave"]


def acts_as_owner(room: Room, actor: str, token_role: str) -> bool:
    """True for the room's owner and for service/admin tokens."""
    return token_role in ("service", "admin") or (room.owner is not None and room.owner == actor)


def is_moderator(room: Room, actor: str, token_role: str) -> bool:
    """True for the owner, a moderator, or a service/admin token."""
    return acts_as_owner(room, actor, token_role) or actor in room.moderators


def may_delete(room: Room, actor: str, token_role: str, author: str) -> bool:
    """The author, a moderator, the owner, or a service/admin token."""
    return actor == author or is_moderator(room, actor, token_role)


def authorise(room: Room, actor: str, token_role: str, action: Action, target: str) -> None:
    """Check that ``actor`` (with token role ``token_role``) may do ``action`` to ``target``.

    Raises:
        ProtocolError: ``conflict`` for any of these in a direct message; ``forbidden`` otherwise
            when not allowed.
    """
    if room.dm:
        raise ProtocolError(ErrorCode.CONFLICT, "A direct message has exactly its two members")
    if action == "leave" or (action == "remove" and actor == target):
        if target == room.owner:  # v1: removing the owner is forbidden; leaving is a conflict
            code = ErrorCode.CONFLICT if action == "leave" else ErrorCode.FORBIDDEN
            raise ProtocolError(code, "The owner cannot leave the room")
        return
    owner_like = acts_as_owner(room, actor, token_role)
    if action == "role":
        if not owner_like:
            raise ProtocolError(ErrorCode.FORBIDDEN, "Only the owner can change roles")
        if target == room.owner:
            raise ProtocolError(ErrorCode.FORBIDDEN, "The owner's role cannot change")
        return
    if not is_moderator(room, actor, token_role):
        raise ProtocolError(ErrorCode.FORBIDDEN, "Only the owner or a moderator can do this")
    if action == "add":
        return
    if target == room.owner:
        raise ProtocolError(ErrorCode.FORBIDDEN, "Nobody can act on the room's owner")
    if not owner_like and target in room.moderators:
        raise ProtocolError(ErrorCode.FORBIDDEN, "A moderator cannot act on another moderator")
