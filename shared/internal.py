"""Request bodies of the internal request/reply endpoints (docs/subjects.md is the prose).

The gateway builds these from authenticated client frames and HTTP calls; services validate
them on arrival (a ``pydantic.ValidationError`` becomes ``validation_error``). Ids of the acting
user always come from a verified token, never from client input.

Replies: auth, notify and room-management endpoints answer JSON objects; ``chat.join``,
``chat.leave``, ``chat.send``, ``chat.history``, ``chat.presence``, ``notify.list`` and
``notify.read`` answer the *final client frame* without ``id`` (the gateway splices the request
``id`` into the bytes, :func:`with_request_id`), so nothing re-encodes them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from shared.events import EventType
from shared.protocol import SURROGATE_RE, surrogate_path

#: Largest ``metadata`` of a notification, as compact JSON (bytes).
MAX_METADATA_BYTES = 4096


def unicode_text(value: str) -> str:
    """``value`` if it is Unicode text; a lone surrogate (from a ``\\uD800`` escape) cannot be
    encoded as UTF-8 anywhere downstream (RFC 3629), so it is a validation error here."""
    if SURROGATE_RE.search(value) is not None:
        raise ValueError("must be valid Unicode (no lone surrogates)")
    return value


def json_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Notification ``metadata``: Unicode strings only, at most :data:`MAX_METADATA_BYTES`."""
    if surrogate_path(value) is not None:
        raise ValueError("must be valid Unicode (no lone surrogates)")
    try:
        size = len(json.dumps(value, separators=(",", ":")).encode())
    except (TypeError, ValueError, RecursionError) as error:
        raise ValueError("must be plain JSON") from error
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes of JSON")
    return value


#: A client-supplied string that must be Unicode text (no lone surrogates).
Text = Annotated[StrictStr, AfterValidator(unicode_text)]
Username = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_]{3,32}$")]
Password = Annotated[Text, Field(min_length=8, max_length=128)]
RoomName = Annotated[StrictStr, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
UserId = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
#: A service's name as it posts (PROTOCOL.md section 12): the name of its service token.
ServiceName = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{1,48}$")]
#: ``svc:<name>``: the ``user_id`` of a service in a room (its posts, deletes and moderation).
BotId = Annotated[StrictStr, Field(pattern=r"^svc:[A-Za-z0-9_-]{1,48}$")]
NotificationType = Literal["info", "warning", "error", "success"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- auth ------------------------------------------------------------------------------------
class RegisterRequest(_Body):
    """``auth.register``: answers ``{"user_id","username"}``; 409 ``conflict`` if taken."""

    username: Username
    password: Password
    client_ip: str | None = None


class LoginRequest(_Body):
    """``auth.login``: answers the token pair; ``unauthorized`` or ``rate_limited``."""

    username: Annotated[Text, Field(min_length=1, max_length=64)]
    password: Annotated[Text, Field(min_length=1, max_length=1024)]
    client_ip: str | None = None


class RefreshRequest(_Body):
    """``auth.refresh``: answers a new token pair; ``unauthorized`` for unknown/reused tokens."""

    refresh_token: Annotated[Text, Field(min_length=1, max_length=512)]


class LogoutRequest(_Body):
    """``auth.logout``: answers ``{}``; ``all`` revokes every session of the user."""

    refresh_token: Annotated[Text, Field(min_length=1, max_length=512)]
    all: StrictBool = False


class ServiceTokenRequest(_Body):
    """``auth.service_token``: answers ``{"access_token","expires_at","role"}``."""

    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{1,48}$")]
    ttl_days: Annotated[StrictInt, Field(ge=1, le=3650)] = 365
    role: Literal["service", "admin"] = "service"


class ServiceTokenRevokeRequest(_Body):
    """``auth.service_token.revoke``: answers the token's record with ``revoked_ms``;
    ``not_found`` for an unknown ``jti``."""

    jti: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{32}$")]


class PasswordChangeRequest(_Body):
    """``auth.password``: answers a fresh token pair (a new session); every other session of
    the user is revoked. ``unauthorized`` for a wrong ``current_password`` (throttled like
    logins)."""

    user_id: UserId
    current_password: Annotated[Text, Field(min_length=1, max_length=1024)]
    new_password: Password
    client_ip: str | None = None


class LookupRequest(_Body):
    """``auth.lookup`` / ``auth.me``: by ``username`` (case-insensitive) or ``user_id``;
    answers ``{"user_id","username","created_at"}`` or ``not_found``."""

    username: StrictStr | None = None
    user_id: StrictStr | None = None


# --- chat ------------------------------------------------------------------------------------
class Actor(_Body):
    """The authenticated user a chat request acts for."""

    user_id: UserId
    username: StrictStr


#: The caller's token role: a service or admin token acts as the owner of any room (PROTOCOL.md
#: section 10).
TokenRole = Literal["user", "service", "admin"]


class ServiceActor(Actor):
    """An actor that may be a service: with a ``service`` or ``admin`` token ``role`` it acts as
    ``svc:<name>``, the id its posts carry (PROTOCOL.md section 12), so everything one service
    does in a room has one identity; a ``user`` token acts as the user."""

    user_id: UserId | BotId
    role: TokenRole = "user"

    @model_validator(mode="after")
    def _service_ids(self) -> Self:
        if self.user_id.startswith("svc:") and self.role == "user":
            raise ValueError("user_id: svc:<name> only with a service or admin token")
        return self


class JoinRequest(Actor):
    """``chat.join``: answers the ``joined`` frame (``last_seq`` also in header ``Natter-Seq``).

    ``first_local`` is true when this is the user's first socket in the room on this gateway:
    chat_service then records presence (``natter_presence`` key ``room.user.gateway``) and
    publishes ``user_joined`` if the user was not online in the room anywhere.
    """

    room: RoomName
    since: Annotated[StrictInt, Field(ge=0)] | None = None
    gateway_id: UserId
    first_local: StrictBool = True


class LeaveRequest(Actor):
    """``chat.leave``: answers the ``left`` frame; ``last_local`` removes this gateway's presence
    key and publishes ``user_left`` when no other gateway has the user in the room."""

    room: RoomName
    gateway_id: UserId
    last_local: StrictBool = True


ClientMsgId = Annotated[Text, Field(min_length=1, max_length=64)]
#: A reaction: 1..32 characters, no whitespace or control characters (PROTOCOL.md section 8).
Emoji = Annotated[Text, Field(min_length=1, max_length=32, pattern=r"^[^\s\x00-\x1f\x7f-\x9f]+$")]
Seq = Annotated[StrictInt, Field(ge=1)]


#: An attachment's id (PROTOCOL.md section 11): 32 hex digits.
AttachmentId = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{32}$")]
#: Most attachments one message carries (section 11).
MAX_ATTACHMENTS = 10


class SendRequest(Actor):
    """``chat.send``: answers the ``ack`` frame (header ``Natter-Duplicate: 1`` when it is the
    original's, a retry). Idempotent on (room, user, client_msg_id); ``reply_to`` makes it a
    reply to that message of the room (``message_not_found``).

    ``bot``: a service posts (``user_id`` ``svc:<name>``, ``username`` the name): to any room
    that exists, without membership, ``"bot": true`` in the message (section 12).
    """

    user_id: UserId | BotId
    room: RoomName
    message: Annotated[Text, Field(min_length=1, max_length=4000)]
    client_msg_id: ClientMsgId | None = None
    reply_to: Seq | None = None
    bot: StrictBool = False
    #: uploaded by this user to this room, each used once (PROTOCOL.md section 11)
    attachments: Annotated[list[AttachmentId], Field(max_length=MAX_ATTACHMENTS)] | None = None
    #: the sending socket: it knows its message moved the sender's read marker, so the
    #: ``read_marker`` pushed after the send goes to the user's other sockets only
    conn_id: Annotated[StrictStr, Field(max_length=64)] | None = None

    @model_validator(mode="after")
    def _bot_ids(self) -> SendRequest:
        if self.bot != self.user_id.startswith("svc:"):
            raise ValueError("user_id: svc:<name> exactly for bot posts")
        return self


#: Most sends in one ``chat.send.batch`` (the room log's group commit takes up to 100 at once).
SEND_BATCH_MAX = 100


class SendBatchRequest(_Body):
    """``chat.send.batch``: one socket's consecutive ``chat_message`` frames, sent while its
    previous send was in flight (docs/protocol.md, "Pipelined sends"). Each item is a
    :class:`SendRequest` body, validated on its own: a bad item is that item's error only.
    They are stored in list order (plain messages of one room in one group commit). Answers
    one line per item, in order: the ``ack`` frame, or the ``error`` frame of that item
    (compact JSON, no ``id``; the gateway splices it in)."""

    sends: Annotated[list[Any], Field(min_length=1, max_length=SEND_BATCH_MAX)]


class WebhookCreateRequest(_Body):
    """``notify.webhooks.create`` (``POST /api/webhooks``, admin): ``url``, the ``events`` to
    send (types of :mod:`shared.events`), the signing ``secret`` (16..256 characters; one is
    made when absent) and optionally ``rooms`` (null: every public room; a list: exactly those
    rooms, private ones included). Answers the webhook with its secret."""

    url: Annotated[StrictStr, Field(min_length=1, max_length=2048)]
    events: Annotated[list[EventType], Field(min_length=1, max_length=8)]
    secret: Annotated[StrictStr, Field(min_length=16, max_length=256)] | None = None
    rooms: Annotated[list[RoomName], Field(max_length=1000)] | None = None
    created_by: StrictStr = ""


class WebhookRef(_Body):
    """``notify.webhooks.delete`` / ``.deliveries``: the webhook ``id``."""

    id: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{16}$")]


class AttachmentRecord(_Body):
    """``chat.attachments.register`` (the gateway, after storing the file in the Object Store):
    answers the public part ``{"attachment_id","name","size","content_type","width","height"}``.
    ``claim`` and ``message_seq`` are chat's own (which request took it, which message holds it)."""

    attachment_id: AttachmentId
    name: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    size: Annotated[StrictInt, Field(ge=0)]
    content_type: Annotated[StrictStr, Field(min_length=3, max_length=127)]
    width: Annotated[StrictInt, Field(ge=1)] | None = None
    height: Annotated[StrictInt, Field(ge=1)] | None = None
    thumbnail: StrictBool = False
    room: RoomName
    user_id: UserId
    created_at: StrictStr = ""
    claim: StrictStr | None = None

    def public(self) -> dict[str, Any]:
        """What clients see (PROTOCOL.md section 11)."""
        return self.model_dump(include={"attachment_id", "name", "size", "content_type", "width", "height"})


class AttachmentGetRequest(_Body):
    """``chat.attachments.get``: the record of ``attachment_id`` if ``user_id`` may read its
    room now (``forbidden``; ``not_found`` when unknown or deleted); answers the record with
    ``thumbnail``."""

    attachment_id: AttachmentId
    user_id: UserId | BotId
    role: TokenRole = "user"


class ApiPostRequest(_Body):
    """``api.rooms.post`` (backend services inside the NATS network, PROTOCOL.md section 12):
    the body of ``POST /api/rooms/{room}/messages`` plus ``room``, and optionally the
    ``service`` name it posts as (default ``backend``). Answers the ``ack`` frame."""

    room: RoomName
    message: Annotated[Text, Field(min_length=1, max_length=4000)]
    client_msg_id: ClientMsgId | None = None
    reply_to: Seq | None = None
    service: ServiceName = "backend"


class EventRequest(ServiceActor):
    """What ``chat.edit``, ``chat.delete`` and ``chat.react`` share: the message ``target``
    of ``room``, the idempotency key, and the caller's token ``role`` (``user``, ``service``,
    ``admin``; a service or admin acts as the room's owner, PROTOCOL.md section 10)."""

    room: RoomName
    target: Seq
    client_msg_id: ClientMsgId | None = None


class EditRequest(EventRequest):
    """``chat.edit``: only the author; answers ``ack`` (``seq`` null when the text is unchanged)."""

    message: Annotated[Text, Field(min_length=1, max_length=4000)]


class DeleteRequest(EventRequest):
    """``chat.delete``: the author, a moderator or the owner; answers ``ack``."""


class ReactRequest(EventRequest):
    """``chat.react``: answers ``ack`` (``seq`` null when it changes nothing)."""

    emoji: Emoji
    op: Literal["add", "remove"] = "add"


class HistoryRequest(_Body):
    """``chat.history``: answers the ``history`` frame.

    ``before``: messages with ``seq < before`` (latest ``limit`` of them, materialised);
    ``thread``: the same over the replies to that message. ``after`` (internal, used by
    gateways to fill gaps): raw room log entries with ``seq > after``, oldest first, up to
    ``limit``.
    """

    room: RoomName
    user_id: UserId
    before: Annotated[StrictInt, Field(ge=1)] | None = None
    after: Annotated[StrictInt, Field(ge=0)] | None = None
    thread: Seq | None = None
    limit: Annotated[StrictInt, Field(ge=1, le=1000)] = 50


class PresenceRequest(_Body):
    """``chat.presence``: answers the ``presence`` frame."""

    room: RoomName
    user_id: UserId


class RoomsListRequest(_Body):
    """``chat.rooms.list``: answers ``{"rooms":[{"name","private","owner","last_seq","online"}]}``."""

    user_id: UserId


class RoomCreateRequest(Actor):
    """``chat.rooms.create``: answers the room; ``conflict`` if it exists, ``invalid_room``."""

    name: StrictStr
    private: StrictBool = False


class RoomMemberRequest(ServiceActor):
    """``chat.rooms.add_member`` (owner, moderator) / ``chat.rooms.remove_member`` (owner,
    moderator, or the member themselves): answers the room. ``role`` is the caller's token
    role: a service or admin token acts as the room's owner (PROTOCOL.md section 10)."""

    room: RoomName
    member: Username


class RoomRoleRequest(RoomMemberRequest):
    """``chat.rooms.set_role`` (owner): make ``member`` a moderator or a member again."""

    member_role: Literal["moderator", "member"]


class RoomSanctionRequest(RoomMemberRequest):
    """``chat.rooms.ban`` / ``chat.rooms.mute`` (owner, moderator): ``duration_s`` null = until
    lifted; ``chat.rooms.unban`` / ``chat.rooms.unmute`` ignore it."""

    duration_s: Annotated[StrictInt, Field(ge=1, le=10 * 365 * 86_400)] | None = None


class RoomLeaveRequest(Actor):
    """``chat.rooms.leave``: end the caller's membership of ``room`` for good."""

    room: RoomName


class MyRoomsRequest(_Body):
    """``chat.rooms.mine``: answers ``{"rooms":[{"name","private","dm","peer","role","last_seq",
    "read_seq","unread","last_message"}]}``, newest activity first."""

    user_id: UserId


class DmRequest(Actor):
    """``chat.dms.open``: the direct message with ``peer`` (a username); answers
    ``{"room","peer":{"user_id","username"},"created":bool}``."""

    peer: Username


class ReadRequest(Actor):
    """``chat.read``: move the caller's read marker in ``room`` to ``seq`` (never backwards);
    answers the ``read_marker`` frame. ``conn_id`` is the asking socket, which gets the answer
    and not the copy pushed to the user's other sockets."""

    room: RoomName
    seq: Annotated[StrictInt, Field(ge=0)]
    conn_id: Annotated[StrictStr, Field(max_length=64)] | None = None


class AccessRequest(_Body):
    """``chat.access``: which of ``user_ids`` may read ``room`` now; answers
    ``{"room","readers":[user ids],"private"}`` (plus ``"message"`` when asked with ``seq``;
    ``room_not_found``). Every path that carries a room's
    content to a user outside its sockets (mention notifications, later webhooks and previews)
    asks this first (DESIGN.md rule 14)."""

    room: RoomName
    user_ids: Annotated[list[UserId], Field(max_length=100)] = Field(default_factory=list)
    #: with a ``seq``, the answer also has ``"message"``: ``{"text","deleted"}`` of message
    #: ``seq`` as it is now (``text`` is ``""`` once deleted), or null when there is none.
    seq: Annotated[StrictInt, Field(ge=1)] | None = None


class AccessChange(_Body):
    """A ``ROOM_ACCESS`` entry: ``user_id`` lost the right to read ``room`` at registry revision
    ``rev`` (``reason`` ``removed``; v2 adds ``banned``). Gateways drop that user's sockets from
    the room unless they joined at ``rev`` or later."""

    room: RoomName
    user_id: UserId
    reason: Literal["removed", "banned"] = "removed"
    rev: Annotated[StrictInt, Field(ge=0)]


# --- notify ----------------------------------------------------------------------------------
class NotifySendRequest(_Body):
    """``notify.send``: answers ``{"status":"sent","id":..}``; ``user_id`` or ``username``."""

    user_id: UserId | None = None
    username: Annotated[Text, Field(max_length=64)] | None = None
    title: Annotated[Text, Field(min_length=1, max_length=200)]
    message: Annotated[Text, Field(min_length=1, max_length=4000)]
    notification_type: NotificationType = "info"
    metadata: Annotated[dict[str, Any], AfterValidator(json_metadata)] = Field(default_factory=dict)


class NotifyBroadcastRequest(_Body):
    """``notify.broadcast``: answers ``{"status":"broadcasted"}``."""

    title: Annotated[Text, Field(min_length=1, max_length=200)]
    message: Annotated[Text, Field(min_length=1, max_length=4000)]
    notification_type: NotificationType = "info"


class NotifyListRequest(_Body):
    """``notify.list``: answers ``{"type":"notifications","unread":N,"items":[..]}``."""

    user_id: UserId
    unread_only: StrictBool = False
    limit: Annotated[StrictInt, Field(ge=1, le=500)] = 50


class NotifyReadRequest(_Body):
    """``notify.read``: answers the same summary as ``notify.list`` with ``unread_only``."""

    user_id: UserId
    ids: Annotated[list[Annotated[Text, Field(max_length=128)]], Field(max_length=500)] = Field(
        default_factory=list
    )
    all: StrictBool = False


def with_request_id(frame: bytes, request_id: str | int | None) -> bytes:
    """Splice ``"id": request_id`` into an encoded JSON object without decoding it.

    ``frame`` must be a compact JSON object (``{...}``); the result is still valid JSON.
    """
    if request_id is None:
        return frame
    return frame[:-1] + b',"id":' + json.dumps(request_id).encode() + b"}"
