"""A message's current state, derived from the room log (pure logic, no I/O).

The state of message ``seq`` lives on ``roomview.<k>.<room>.s.<seq>`` (rollup: only the latest
is kept) and is written in the same atomic batch as the event that changes it, so it always
reflects exactly the events stored (DESIGN.md rule 13). A message nobody touched has no state.

Stored as compact JSON::

    {"at":61,"stream_seq":4711,"edited":"new text","edited_at":"...","edits":[60],
     "deleted":false,"reactions":[["+1",["u1","u2"]],["tada",["u1"]]],"replies":2,
     "deleted_replies":0}

``at`` is the seq of the last event applied; ``stream_seq`` is where the message itself is
stored and ``edits`` the seqs of its edits: what a delete must erase. ``replies`` counts the
replies ever stored (a reply's thread count is the new value, assigned under the same
compare-and-set as the state), ``deleted_replies`` those deleted since.
Reactions keep the order of each emoji's first use (PROTOCOL.md section 8), each with its users
in the order they reacted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Final

from shared.protocol import dumps

#: At most this many distinct emoji on one message (PROTOCOL.md section 8).
MAX_DISTINCT_EMOJI: Final = 20


@dataclass(frozen=True, slots=True)
class MessageState:
    """See the module docstring. Immutable: every change returns a new state."""

    at: int = 0
    stream_seq: int = 0
    edited: str | None = None
    edited_at: str | None = None
    edits: tuple[int, ...] = ()
    deleted: bool = False
    reactions: tuple[tuple[str, tuple[str, ...]], ...] = ()
    replies: int = 0
    deleted_replies: int = 0
    #: set only in memory: the revision of the stored state this was read from (0: none).
    revision: int = field(default=0, compare=False)

    # --- changes ----------------------------------------------------------------------------
    def edit(self, *, seq: int, text: str, edited_at: str) -> MessageState:
        """After the edit stored at ``seq``."""
        return replace(self, at=seq, edited=text, edited_at=edited_at, edits=(*self.edits, seq))

    def delete(self, *, seq: int) -> MessageState:
        """After the delete at ``seq``: no text, no edits' text, no reactions."""
        return replace(self, at=seq, deleted=True, edited=None, reactions=())

    def has_reaction(self, emoji: str, user_id: str) -> bool:
        """True when ``user_id`` holds ``emoji`` on this message."""
        return any(name == emoji and user_id in users for name, users in self.reactions)

    def can_add_emoji(self, emoji: str) -> bool:
        """False when ``emoji`` would be the 21st distinct emoji."""
        return any(name == emoji for name, _ in self.reactions) or len(self.reactions) < MAX_DISTINCT_EMOJI

    def react(self, *, seq: int, emoji: str, user_id: str, add: bool) -> MessageState:
        """After the reaction event at ``seq`` (``add`` or remove ``emoji`` for ``user_id``);
        an emoji nobody holds any more disappears."""
        out: list[tuple[str, tuple[str, ...]]] = []
        found = False
        for name, users in self.reactions:
            if name == emoji:
                found = True
                users = tuple(u for u in users if u != user_id) + ((user_id,) if add else ())
            if users:
                out.append((name, users))
        if add and not found:
            out.append((emoji, (user_id,)))
        return replace(self, at=seq, reactions=tuple(out))

    def replied(self, *, seq: int) -> MessageState:
        """After a reply to this message was stored at ``seq`` (its thread count is the new
        ``replies``)."""
        return replace(self, at=seq, replies=self.replies + 1)

    def reply_deleted(self, *, seq: int) -> MessageState:
        """After one of this message's replies was deleted at ``seq``."""
        return replace(self, at=seq, deleted_replies=self.deleted_replies + 1)

    # --- views ------------------------------------------------------------------------------
    def reactions_for(self, me: str | None) -> list[dict[str, Any]]:
        """``[{"emoji","count","me"}]`` as ``history`` shows them to user ``me``."""
        return [{"emoji": name, "count": len(users), "me": me in users} for name, users in self.reactions]

    # --- storage ----------------------------------------------------------------------------
    def encode(self) -> bytes:
        """The stored JSON (module docstring)."""
        return dumps(
            {
                "at": self.at,
                "stream_seq": self.stream_seq,
                "edited": self.edited,
                "edited_at": self.edited_at,
                "edits": list(self.edits),
                "deleted": self.deleted,
                "reactions": [[name, list(users)] for name, users in self.reactions],
                "replies": self.replies,
                "deleted_replies": self.deleted_replies,
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes, *, revision: int = 0) -> MessageState:
        """Parse a stored state; malformed parts are dropped (a state is derived data).

        Raises:
            ValueError: not a JSON object.
        """
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("message state is not an object")

        def integer(value: Any) -> int:
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        def text(value: Any) -> str | None:
            return value if isinstance(value, str) else None

        edits = tuple(integer(seq) for seq in raw.get("edits") or [] if integer(seq) > 0)
        reactions = tuple(
            (item[0], tuple(u for u in item[1] if isinstance(u, str)))
            for item in raw.get("reactions") or []
            if isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], list)
        )
        return cls(
            at=integer(raw.get("at")),
            stream_seq=integer(raw.get("stream_seq")),
            edited=text(raw.get("edited")),
            edited_at=text(raw.get("edited_at")),
            edits=edits,
            deleted=raw.get("deleted") is True,
            reactions=reactions,
            replies=integer(raw.get("replies")),
            deleted_replies=integer(raw.get("deleted_replies")),
            revision=revision,
        )


def materialise(data: dict[str, Any], state: MessageState | None, *, me: str | None) -> dict[str, Any]:
    """A message as ``history`` and ``joined`` show it (PROTOCOL.md section 8): its v1 fields,
    ``edited_at`` if edited, ``deleted: true`` and empty text if deleted, ``reply_to`` (null for
    a top-level message), ``reply_count`` and ``reactions`` (with ``me`` for user ``me``)."""
    out = dict(data)
    out.setdefault("reply_to", None)
    if state is not None and state.deleted:
        out["message"] = ""
        out["deleted"] = True
        out.pop("edited_at", None)
    elif state is not None and state.edited is not None:
        out["message"] = state.edited
        out["edited_at"] = state.edited_at
    out["reply_count"] = max(0, state.replies - state.deleted_replies) if state is not None else 0
    out["reactions"] = state.reactions_for(me) if state is not None and not state.deleted else []
    return out
