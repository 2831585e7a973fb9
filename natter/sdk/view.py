"""A room's messages as they are now, kept from the room's event stream (PROTOCOL.md section 8).

:class:`RoomView` applies what the client hands out for one room (``message``,
``message_edited``, ``message_deleted``, ``reaction``; ``member`` events are ignored) and answers
:meth:`RoomView.messages` in the shape ``history`` returns: each message with its current text,
``edited_at``, ``deleted``, ``reply_to``, ``reply_count`` and ``reactions`` (``me`` for the user
the view belongs to). Because the client hands out every room event once and in ``seq`` order,
a view fed from the first ``seq`` on equals ``history`` at every point, across reconnects and
failovers; tests compare the two (``tests/faults``).

    view = RoomView(room, me=client.user_id)
    async for frame in client:
        view.apply(frame)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Frame = dict[str, Any]


@dataclass
class _Message:
    data: Frame
    edited: str | None = None
    edited_at: str | None = None
    deleted: bool = False
    reactions: list[tuple[str, list[str]]] = field(default_factory=list)
    replies: set[int] = field(default_factory=set)


class RoomView:
    """The materialised messages of one room.

    Args:
        room: the room.
        me: the user id ``reactions[].me`` is about.
    """

    def __init__(self, room: str, *, me: str | None) -> None:
        self.room = room
        self.me = me
        self._messages: dict[int, _Message] = {}
        #: the highest seq applied (any event kind).
        self.last_seq = 0

    def apply(self, frame: Frame) -> None:
        """Apply one handed-out frame of this room (others, and unknown kinds, are ignored)."""
        if frame.get("room") != self.room:
            return
        data = frame.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("seq"), int):
            return
        self.last_seq = max(self.last_seq, data["seq"])
        kind = frame.get("type")
        if kind == "message":
            self._message(data)
            return
        target = self._messages.get(data.get("target"))  # type: ignore[arg-type]
        if target is None:
            return
        if kind == "message_edited" and not data.get("deleted"):
            target.edited, target.edited_at = str(data.get("message", "")), data.get("edited_at")
        elif kind == "message_deleted":
            self._delete(target)
        elif kind == "reaction":
            self._react(target, str(data.get("emoji")), str(data.get("user_id")), data.get("op") != "remove")

    def _message(self, data: Frame) -> None:
        seq = int(data["seq"])
        message = _Message(data={k: v for k, v in data.items() if k not in ("deleted",)})
        if data.get("deleted"):  # a replayed message that was deleted since
            message.deleted = True
        self._messages[seq] = message
        parent = self._messages.get(data.get("reply_to"))  # type: ignore[arg-type]
        if parent is not None and not message.deleted:
            parent.replies.add(seq)

    def _delete(self, message: _Message) -> None:
        message.deleted, message.edited, message.edited_at, message.reactions = True, None, None, []
        parent = self._messages.get(message.data.get("reply_to"))  # type: ignore[arg-type]
        if parent is not None:
            parent.replies.discard(int(message.data["seq"]))

    @staticmethod
    def _react(message: _Message, emoji: str, user_id: str, add: bool) -> None:
        out: list[tuple[str, list[str]]] = []
        found = False
        for name, users in message.reactions:
            if name == emoji:
                found = True
                users = [u for u in users if u != user_id] + ([user_id] if add else [])
            if users:
                out.append((name, users))
        if add and not found:
            out.append((emoji, [user_id]))
        message.reactions = out

    def messages(self) -> list[Frame]:
        """Every message seen, oldest first, as ``history`` shows them."""
        return [self._shown(self._messages[seq]) for seq in sorted(self._messages)]

    def _shown(self, message: _Message) -> Frame:
        out = dict(message.data)
        out.setdefault("reply_to", None)
        if message.deleted:
            out["message"] = ""
            out["deleted"] = True
        elif message.edited is not None:
            out["message"] = message.edited
            out["edited_at"] = message.edited_at
        out["reply_count"] = len(message.replies)
        out["reactions"] = (
            []
            if message.deleted
            else [
                {"emoji": name, "count": len(users), "me": self.me in users}
                for name, users in message.reactions
            ]
        )
        return out
