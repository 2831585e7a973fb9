"""The event feed (PROTOCOL.md section 12): one pydantic model per event type.

Every event is published on the JetStream stream ``EVENTS`` under ``events.<type>``
(``events.message.created``...) as the envelope ``{"id","type","created_at","data"}``, the same
object a webhook receives as its body. These models are the single source of both: the
producers build each event through them (:func:`envelope`), and :mod:`shared.asyncapi` generates
the AsyncAPI 3 document served at ``/asyncapi.json`` from their JSON schemas, so the document
cannot drift from what is published.

Room events (``message.*``, ``reaction.*``, ``member.changed``) carry the room event's ``data``
exactly as a socket receives it (PROTOCOL.md section 8) plus ``room``; they are relayed from the
room logs in ``seq`` order per room (:mod:`chat_service.feed`), and their ``id`` is
``room:<room>:<seq>``. ``user.registered`` has id ``user:<user_id>:registered``;
``notification.created`` has id ``notification:<notification id>``. The ``id`` is also the
``Nats-Msg-Id`` (JetStream drops a repeat within 10 minutes), and receivers de-duplicate by it.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.protocol import utc_timestamp

#: Every event type of the feed, in the order PROTOCOL.md section 12 lists them.
EVENT_TYPES: Final = (
    "message.created",
    "message.edited",
    "message.deleted",
    "reaction.added",
    "reaction.removed",
    "member.changed",
    "user.registered",
    "notification.created",
)
EventType = Literal[
    "message.created",
    "message.edited",
    "message.deleted",
    "reaction.added",
    "reaction.removed",
    "member.changed",
    "user.registered",
    "notification.created",
]
#: The room event types (relayed from the room logs; subject to room access for webhooks).
ROOM_EVENT_TYPES: Final = frozenset(EVENT_TYPES[:6])


def feed_subject(event_type: str) -> str:
    """``events.<type>`` (``events.message.created``).

    Raises:
        ValueError: not one of :data:`EVENT_TYPES`.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    return f"events.{event_type}"


class _Data(BaseModel):
    """Fields beyond those listed may appear (a newer natter adds, never removes)."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Member(_Data):
    """A user as room events name them."""

    user_id: str
    username: str


class Attachment(_Data):
    """A file a message carries (PROTOCOL.md section 11); download it with
    `GET /api/attachments/{attachment_id}` and a service token."""

    attachment_id: str = Field(description="32 hex characters.")
    name: str
    size: int = Field(ge=0, description="Bytes.")
    content_type: str = Field(description="Detected from the bytes, never from the name.")
    width: int | None = Field(default=None, description="Pixels, images only.")
    height: int | None = Field(default=None, description="Pixels, images only.")


class _RoomEventData(_Data):
    room: str = Field(description="The room (`^[a-z0-9][a-z0-9_-]{0,63}$`).")
    seq: int = Field(ge=1, description="The room event's seq: contiguous per room, in order.")
    user_id: str = Field(description="Who caused it (`svc:<name>` for a service posting as a bot).")
    username: str
    timestamp: str = Field(description="Storage time, ISO 8601 UTC with milliseconds and `Z`.")


class MessageData(_RoomEventData):
    """A new message: the `data` of the `message` frame, plus `room`."""

    id: str = Field(description="`<room>:<seq>`.")
    message: str = Field(description="The text (verbatim after trimming); render it as text, never HTML.")
    client_msg_id: str | None = None
    reply_to: int | None = Field(default=None, description="The seq of the message this replies to.")
    bot: bool | None = Field(default=None, description="True when a service posted it.")
    attachments: list[Attachment] | None = Field(default=None, description="Files (section 11).")


class MessageEditedData(_RoomEventData):
    """The author's new text for message `target`."""

    type: Literal["message_edited"] = "message_edited"
    target: int = Field(ge=1)
    message: str
    edited_at: str


class MessageDeletedData(_RoomEventData):
    """Message `target` was deleted: its text is gone from every answer and from storage."""

    type: Literal["message_deleted"] = "message_deleted"
    target: int = Field(ge=1)


class ReactionData(_RoomEventData):
    """A user added (`reaction.added`) or removed (`reaction.removed`) `emoji` on `target`."""

    type: Literal["reaction"] = "reaction"
    target: int = Field(ge=1)
    emoji: str
    op: Literal["add", "remove"]


class MemberData(_RoomEventData):
    """A membership change: who (`member`), what (`action`), by whom (`user_id`)."""

    type: Literal["member"] = "member"
    action: Literal["added", "removed", "left", "banned", "unbanned", "muted", "unmuted", "role"]
    member: Member
    role: str | None = None
    until: str | None = None


class UserRegisteredData(_Data):
    """A new account."""

    user_id: str
    username: str


class NotificationData(_Data):
    """A notification stored for `user_id`: the `data` of its `notification` frame, plus
    `user_id`."""

    user_id: str
    id: str
    title: str
    message: str
    notification_type: Literal["info", "warning", "error", "success"]
    timestamp: str
    read: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(description="Unique per event; receivers de-duplicate by it.")]
    created_at: Annotated[str, Field(description="When the event happened, ISO 8601 UTC.")]


class MessageCreated(_Envelope):
    """`message.created`."""

    type: Literal["message.created"] = "message.created"
    data: MessageData


class MessageEdited(_Envelope):
    """`message.edited`."""

    type: Literal["message.edited"] = "message.edited"
    data: MessageEditedData


class MessageDeleted(_Envelope):
    """`message.deleted`."""

    type: Literal["message.deleted"] = "message.deleted"
    data: MessageDeletedData


class ReactionAdded(_Envelope):
    """`reaction.added`."""

    type: Literal["reaction.added"] = "reaction.added"
    data: ReactionData


class ReactionRemoved(_Envelope):
    """`reaction.removed`."""

    type: Literal["reaction.removed"] = "reaction.removed"
    data: ReactionData


class MemberChanged(_Envelope):
    """`member.changed`."""

    type: Literal["member.changed"] = "member.changed"
    data: MemberData


class UserRegistered(_Envelope):
    """`user.registered`."""

    type: Literal["user.registered"] = "user.registered"
    data: UserRegisteredData


class NotificationCreated(_Envelope):
    """`notification.created`."""

    type: Literal["notification.created"] = "notification.created"
    data: NotificationData


#: event type -> its envelope model (what :mod:`shared.asyncapi` documents).
MODELS: Final[dict[str, type[_Envelope]]] = {
    "message.created": MessageCreated,
    "message.edited": MessageEdited,
    "message.deleted": MessageDeleted,
    "reaction.added": ReactionAdded,
    "reaction.removed": ReactionRemoved,
    "member.changed": MemberChanged,
    "user.registered": UserRegistered,
    "notification.created": NotificationCreated,
}


def envelope(event_type: str, event_id: str, data: dict[str, Any], *, created_at: str | None = None) -> bytes:
    """The event as published and as a webhook body: validated through its model, compact JSON.

    Raises:
        ValueError: an unknown type, or ``data`` that does not fit the type's model
            (pydantic's ``ValidationError`` is a ``ValueError``).
    """
    model = MODELS.get(event_type)
    if model is None:
        raise ValueError(f"unknown event type {event_type!r}")
    event = model.model_validate(
        {"id": event_id, "created_at": created_at or utc_timestamp(), "type": event_type, "data": data}
    )
    return event.model_dump_json(exclude_none=True).encode()


def room_event_id(room: str, seq: int) -> str:
    """The id of room event ``seq`` of ``room``."""
    return f"room:{room}:{seq}"


def room_event_type(entry_type: str | None, op: str | None = None) -> str | None:
    """The feed type of a room log entry whose ``data.type`` is ``entry_type`` (None for a
    message); None for an entry kind the feed does not carry."""
    if entry_type is None:
        return "message.created"
    if entry_type == "message_edited":
        return "message.edited"
    if entry_type == "message_deleted":
        return "message.deleted"
    if entry_type == "reaction":
        return "reaction.added" if op == "add" else "reaction.removed"
    if entry_type == "member":
        return "member.changed"
    return None
