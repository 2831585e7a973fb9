"""The HTTP API's bodies, answers and error shapes, as OpenAPI documents them.

Request bodies carry the constraints the services enforce (shared/internal.py types), so the
OpenAPI document is true both ways. Answers are documented with the fields natter guarantees;
extra fields may be added in later versions (``extra="allow"``). :func:`errors` gives a route's
error statuses: every route may answer 413 (body over 64 KiB), 422 (validation) and 503 (a
service did not answer); each route lists the others it can produce.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    WithJsonSchema,
)

from shared.events import EventType
from shared.internal import NotificationType, Password, RoomName, Text, UserId, Username, json_metadata
from shared.subjects import ROOM_RE


class _In(BaseModel):
    # strict: JSON types as documented (no "0" or 0 for false, no "5" for 5).
    model_config = ConfigDict(extra="ignore", strict=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- bodies ----------------------------------------------------------------------------------
class RegisterBody(_In):
    """``POST /api/auth/register``."""

    username: Username
    password: Password


class LoginBody(_In):
    """``POST /api/auth/login`` (any string may be tried; only registered ones succeed)."""

    username: Annotated[Text, Field(min_length=1, max_length=64)]
    password: Annotated[Text, Field(min_length=1, max_length=1024)]


class RefreshBody(_In):
    """``POST /api/auth/refresh``."""

    refresh_token: Annotated[Text, Field(min_length=1, max_length=512)]


class LogoutBody(_In):
    """``POST /api/auth/logout``."""

    refresh_token: Annotated[Text, Field(min_length=1, max_length=512)]
    all: StrictBool = False


class PasswordBody(_In):
    """``POST /api/auth/password``."""

    current_password: Annotated[Text, Field(min_length=1, max_length=1024)]
    new_password: Password


class RoomCreateBody(_In):
    """``POST /api/rooms``. ``name`` outside the documented pattern is ``invalid_room`` (400,
    PROTOCOL.md section 3), not a validation error, so the pattern is documented, not enforced
    here."""

    name: Annotated[StrictStr, Field(max_length=256, json_schema_extra={"pattern": ROOM_RE.pattern})]
    private: StrictBool = False


class MemberBody(_In):
    """``POST /api/rooms/{room}/members``."""

    username: Username


def _integral(value: object) -> object:
    """JSON Schema's ``integer`` includes ``600.0``: take it as 600 (strict mode would refuse)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class RoleBody(_In):
    """``PUT /api/rooms/{room}/members/{username}`` (owner, PROTOCOL.md section 10)."""

    role: Literal["moderator", "member"]


class SanctionBody(_In):
    """``POST /api/rooms/{room}/bans`` and ``/mutes``: ``duration_s`` null = until lifted
    (bans; a mute without a duration lasts until unmuted too)."""

    username: Username
    duration_s: Annotated[int, Ge(1), Le(10 * 365 * 86_400), BeforeValidator(_integral)] | None = None


class DmBody(_In):
    """``POST /api/dms``."""

    username: Username


class PostMessageBody(_In):
    """``POST /api/rooms/{room}/messages`` (PROTOCOL.md section 12)."""

    message: Annotated[
        Text, Field(min_length=1, max_length=4000, description="1..4000 characters after trimming.")
    ]
    client_msg_id: Annotated[Text, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="The idempotency key: a retry within 10 minutes gets the original's ack."
    )
    reply_to: Annotated[int, Ge(1), BeforeValidator(_integral)] | None = Field(
        default=None, description="Make it a reply to this seq."
    )


def _true(value: bool) -> bool:
    if value is not True:
        raise ValueError("must be true")
    return value


#: JSON ``true`` and nothing else (``Literal[True]`` would also take ``1``).
JsonTrue = Annotated[StrictBool, AfterValidator(_true), WithJsonSchema({"type": "boolean", "const": True})]


class ReadIds(_In):
    """``POST /api/notifications/read`` with the ``ids`` to mark read."""

    ids: Annotated[list[Annotated[Text, Field(max_length=128)]], Field(min_length=1, max_length=500)]
    all: StrictBool = False


class ReadAll(_In):
    """``POST /api/notifications/read`` with ``"all": true``."""

    all: JsonTrue
    ids: Annotated[list[Annotated[Text, Field(max_length=128)]], Field(max_length=500)] = Field(
        default_factory=list
    )


#: ``ids`` (at least one) or ``"all": true``: anything else is 422.
ReadBody = ReadIds | ReadAll


class _NotificationFields(_In):
    title: Annotated[Text, Field(min_length=1, max_length=200)]
    message: Annotated[Text, Field(min_length=1, max_length=4000)]
    notification_type: NotificationType = "info"
    metadata: Annotated[dict[str, Any], AfterValidator(json_metadata)] = Field(
        default_factory=dict, description="Any JSON object, at most 4096 bytes."
    )


class SendToUserId(_NotificationFields):
    """``POST /api/notifications/send`` to a user by id."""

    user_id: UserId
    username: None = None


class SendToUsername(_NotificationFields):
    """``POST /api/notifications/send`` to a user by username."""

    username: Annotated[Text, Field(min_length=1, max_length=64)]
    user_id: None = None


#: Exactly one of ``user_id`` / ``username`` (both or neither is 422).
NotificationSendBody = SendToUserId | SendToUsername


class BroadcastBody(_In):
    """``POST /api/notifications/broadcast``."""

    title: Annotated[Text, Field(min_length=1, max_length=200)]
    message: Annotated[Text, Field(min_length=1, max_length=4000)]
    notification_type: NotificationType = "info"


# --- answers ---------------------------------------------------------------------------------
class Registered(_Out):
    user_id: str
    username: str


class TokenPair(_Out):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    refresh_token: str
    user_id: str
    username: str


class Me(_Out):
    user_id: str
    username: str
    role: str
    created_at: str | None = None


class RoomSummary(_Out):
    name: str
    private: bool
    owner: str | None
    last_seq: int
    online: int


class RoomList(_Out):
    rooms: list[RoomSummary]


class RoomInfo(_Out):
    name: str
    private: bool
    owner: str | None
    members: list[str]
    dm: bool = False
    moderators: list[str] = []


class Peer(_Out):
    user_id: str
    username: str


class LastMessage(_Out):
    seq: int
    user_id: str
    username: str
    message: str
    timestamp: str


class MyRoom(_Out):
    """One row of ``GET /api/me/rooms`` (PROTOCOL.md section 9)."""

    name: str
    private: bool
    dm: bool
    peer: Peer | None
    role: Literal["owner", "moderator", "member"]
    last_seq: int
    read_seq: int
    unread: int
    last_message: LastMessage | None


class MyRooms(_Out):
    rooms: list[MyRoom]


class DmReply(_Out):
    room: str
    peer: Peer


class RoomsPage(_Out):
    """The WebSocket ``history`` frame."""

    type: Literal["history"]
    room: str
    messages: list[dict[str, Any]]
    has_more: bool


class NotificationsPage(_Out):
    """The WebSocket ``notifications`` frame."""

    type: Literal["notifications"]
    unread: int
    items: list[dict[str, Any]]


class WebhookBody(_In):
    """``POST /api/webhooks`` (PROTOCOL.md section 12)."""

    url: Annotated[Text, Field(min_length=1, max_length=2048, description="http(s) URL to POST events to.")]
    events: Annotated[list[EventType], Field(min_length=1, max_length=8)]
    secret: Annotated[Text, Field(min_length=16, max_length=256)] | None = Field(
        default=None, description="Signs every delivery (HMAC-SHA256); made for you when absent."
    )
    rooms: Annotated[list[RoomName], Field(max_length=1000)] | None = Field(
        default=None, description="Only these rooms (private ones included); default: every public room."
    )


class AttachmentInfo(_Out):
    """An uploaded file (PROTOCOL.md section 11)."""

    attachment_id: str
    name: str
    size: int
    content_type: str
    width: int | None
    height: int | None


class WebhookOut(_Out):
    id: str
    url: str
    events: list[str]
    rooms: list[str] | None
    created_at: str
    created_by: str


class WebhookCreated(WebhookOut):
    secret: str


class WebhookList(_Out):
    webhooks: list[WebhookOut]


class WebhookAttempt(_Out):
    event_id: str
    type: str
    attempt: int
    status: int | None
    duration_ms: float
    error: str | None
    at: str
    by: str | None = None


class WebhookDeliveries(_Out):
    deliveries: list[WebhookAttempt]


class PostedReply(_Out):
    """The ``ack`` a socket would get (PROTOCOL.md section 4), without ``id``."""

    type: Literal["ack"]
    room: str
    client_msg_id: str | None
    seq: int
    message_id: str
    timestamp: str


class SentReply(_Out):
    status: Literal["sent"]
    id: str


class BroadcastReply(_Out):
    status: Literal["broadcasted"]


# --- errors ----------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    """Every error: ``detail`` for people, ``code`` for programs (PROTOCOL.md section 7)."""

    detail: str
    code: str


class ErrorItem(BaseModel):
    loc: list[str]
    msg: str
    type: str


class ValidationErrorBody(ErrorBody):
    """422: ``code`` ``validation_error``; ``errors`` lists each problem (may be empty)."""

    errors: list[ErrorItem] = Field(default_factory=list)


#: Statuses any route may answer: an unparsable body, the body limits, validation, a service down.
COMMON_ERRORS = (400, 408, 413, 422, 503)

_DESCRIPTIONS = {
    400: "Bad request (e.g. `invalid_room`, `invalid_json`)",
    401: "Missing, invalid or expired bearer token, or bad credentials",
    403: "Not allowed for this token",
    404: "No such room, user or message",
    408: "The request body did not arrive in time",
    409: "Conflict (the name is taken)",
    413: "The request body is larger than its limit (64 KiB; uploads: the attachment limit)",
    415: "The attachment's content type (from its bytes) is not allowed",
    422: "Validation failed",
    429: "Rate limited; `Retry-After` says when to come back",
    503: "A service did not answer in time; safe to retry",
    507: "Attachment storage is full (the operator's NATTER_CHAT_ATTACHMENTS_MAX_BYTES)",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route: ``statuses`` plus :data:`COMMON_ERRORS`."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, *COMMON_ERRORS}):
        model = ValidationErrorBody if status == 422 else ErrorBody
        entry: dict[str, Any] = {"model": model, "description": _DESCRIPTIONS[status]}
        if status == 429:
            entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
        out[status] = entry
    return out
