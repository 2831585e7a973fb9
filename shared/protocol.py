"""Client wire protocol v2 (PROTOCOL.md): client frames as one discriminated union, and the
encoders for server frames.

Client frames are validated at the edge (DESIGN.md rule 8) in two steps, so each failure gets the
code PROTOCOL.md section 7 names: :func:`parse_frame` turns text into a dict (``invalid_json``),
checks ``type`` (``unknown_type``) and validates the variant (``validation_error`` with
``details``). Room names are checked afterwards with :func:`shared.subjects.check_room`
(``invalid_room``).
"""

from __future__ import annotations

import functools
import json
import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    field_validator,
)
from pydantic import ValidationError as PydanticValidationError

from shared.errors import ErrorCode, ProtocolError

#: The protocol version ``auth_success`` carries as ``"protocol"`` (PROTOCOL.md, its preamble: v2
#: counts every room event in ``seq``, section 8). A client written for v1 can tell from it.
PROTOCOL_VERSION = 2
#: ``id`` of a client request: a string of at most 64 characters or an integer (PROTOCOL.md s1).
RequestId = Annotated[StrictStr, Field(max_length=64)] | StrictInt
#: Chat message text limits after trimming (PROTOCOL.md section 1).
MAX_MESSAGE_CHARS = 4000
MAX_CLIENT_MSG_ID = 64
#: A UTF-16 surrogate code point: JSON may carry one as a lone ``\\uD800`` escape, which is not
#: Unicode text and cannot be encoded as UTF-8 (RFC 8259 section 8.2, RFC 3629 section 3).
SURROGATE_RE = re.compile("[\ud800-\udfff]")


class _Frame(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    id: RequestId | None = None


class AuthFrame(_Frame):
    """``{"type":"auth","token":...}``: first-message auth, or refresh on a live socket."""

    type: Literal["auth"]
    token: Annotated[StrictStr, Field(min_length=1, max_length=8192)]


class PingFrame(_Frame):
    """``{"type":"ping"}``, answered ``pong``."""

    type: Literal["ping"]


class _RoomFrame(_Frame):
    room: Annotated[StrictStr, Field(max_length=256)]


class JoinFrame(_RoomFrame):
    """``{"type":"join","room":..,"since":41}``; ``since`` >= 0 asks for recovery."""

    type: Literal["join"]
    since: Annotated[StrictInt, Field(ge=0)] | None = None


class LeaveFrame(_RoomFrame):
    """``{"type":"leave","room":..}``."""

    type: Literal["leave"]


class PresenceFrame(_RoomFrame):
    """``{"type":"presence","room":..}``."""

    type: Literal["presence"]


class TypingFrame(_RoomFrame):
    """``{"type":"typing","room":..}``; relayed, not stored."""

    type: Literal["typing"]


ClientMsgId = Annotated[StrictStr, Field(min_length=1, max_length=MAX_CLIENT_MSG_ID)]
#: A room ``seq`` naming a message (v2 ``target``, ``reply_to``, ``thread``).
MessageSeq = Annotated[StrictInt, Field(ge=1)]
#: A reaction: 1..32 characters without whitespace or control characters (PROTOCOL.md s8).
EMOJI_RE = re.compile(r"^[^\s\x00-\x1f\x7f-\x9f]{1,32}$")


def _message_text(value: str) -> str:
    """Trimmed text of 1..4000 characters (PROTOCOL.md section 1)."""
    value = value.strip()
    if not value:
        raise ValueError("message must not be empty")
    if len(value) > MAX_MESSAGE_CHARS:
        raise ValueError(f"message must be at most {MAX_MESSAGE_CHARS} characters")
    return value


class ChatMessageFrame(_RoomFrame):
    """``{"type":"chat_message","room":..,"message":..,"client_msg_id":..,"reply_to":58}``.

    ``message`` is trimmed and must then hold 1..4000 characters; ``reply_to`` (v2) makes it a
    reply to that message of the room.
    """

    type: Literal["chat_message"]
    message: StrictStr
    client_msg_id: ClientMsgId | None = None
    reply_to: MessageSeq | None = None
    #: v2 (section 11): ids of files this user uploaded to this room, each used once
    attachments: (
        Annotated[list[Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{32}$")]], Field(max_length=10)] | None
    ) = None

    @field_validator("message")
    @classmethod
    def _trim(cls, value: str) -> str:
        return _message_text(value)


class _EventFrame(_RoomFrame):
    target: MessageSeq
    client_msg_id: ClientMsgId | None = None


class EditFrame(_EventFrame):
    """``{"type":"edit","room":..,"target":58,"message":"new text"}`` (v2, the author only)."""

    type: Literal["edit"]
    message: StrictStr

    @field_validator("message")
    @classmethod
    def _trim(cls, value: str) -> str:
        return _message_text(value)


class DeleteFrame(_EventFrame):
    """``{"type":"delete","room":..,"target":58}`` (v2: the author, a moderator or the owner)."""

    type: Literal["delete"]


class ReactFrame(_EventFrame):
    """``{"type":"react","room":..,"target":58,"emoji":"+1","op":"add"}`` (v2)."""

    type: Literal["react"]
    emoji: StrictStr
    op: Literal["add", "remove"] = "add"

    @field_validator("emoji")
    @classmethod
    def _emoji(cls, value: str) -> str:
        if EMOJI_RE.fullmatch(value) is None:
            raise ValueError("emoji must be 1..32 characters without whitespace or control characters")
        return value


class HistoryFrame(_RoomFrame):
    """``{"type":"history","room":..,"before":58,"limit":50}``; v2 ``thread``: replies to 58."""

    type: Literal["history"]
    before: Annotated[StrictInt, Field(ge=1)] | None = None
    limit: Annotated[StrictInt, Field(ge=1, le=100)] = 50
    thread: MessageSeq | None = None


class ReadFrame(_RoomFrame):
    """``{"type":"read","room":..,"seq":58}``: move the read marker (v2 section 9)."""

    type: Literal["read"]
    seq: Annotated[StrictInt, Field(ge=0)]


class NotificationsFrame(_Frame):
    """``{"type":"notifications","unread_only":true,"limit":50}``."""

    type: Literal["notifications"]
    unread_only: StrictBool = False
    limit: Annotated[StrictInt, Field(ge=1, le=500)] = 50


class MarkReadFrame(_Frame):
    """``{"type":"mark_read","ids":[..]}`` or ``{"type":"mark_read","all":true}``."""

    type: Literal["mark_read"]
    ids: Annotated[list[Annotated[StrictStr, Field(max_length=128)]], Field(max_length=500)] = []
    all: StrictBool = False


ClientFrame = Annotated[
    AuthFrame
    | PingFrame
    | JoinFrame
    | LeaveFrame
    | PresenceFrame
    | TypingFrame
    | ChatMessageFrame
    | EditFrame
    | DeleteFrame
    | ReactFrame
    | HistoryFrame
    | ReadFrame
    | NotificationsFrame
    | MarkReadFrame,
    Field(discriminator="type"),
]
CLIENT_FRAME_TYPES = frozenset(
    {
        "auth",
        "ping",
        "join",
        "leave",
        "presence",
        "typing",
        "chat_message",
        "edit",
        "delete",
        "react",
        "history",
        "read",
        "notifications",
        "mark_read",
    }
)
_client_frame: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


def request_id_of(raw: Any) -> str | int | None:
    """The ``id`` of a decoded frame if it is a valid request id, else ``None`` (for echoing)."""
    if isinstance(raw, dict):
        value = raw.get("id")
        if isinstance(value, str) and len(value) <= 64 and SURROGATE_RE.search(value) is None:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def surrogate_path(value: Any) -> list[str | int] | None:
    """Where the first string (or object key) holding a surrogate code point sits in a decoded
    JSON value, as a ``loc`` path; ``None`` when every string is valid Unicode.

    Iterative, so a deeply nested value cannot exhaust the interpreter's stack.
    """
    pending: list[tuple[Any, list[str | int]]] = [(value, [])]
    while pending:
        item, path = pending.pop()
        if isinstance(item, str):
            if SURROGATE_RE.search(item) is not None:
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and SURROGATE_RE.search(key) is not None:
                    return [*path, key]
                pending.append((child, [*path, key]))
        elif isinstance(item, list):
            pending.extend((child, [*path, index]) for index, child in enumerate(item))
    return None


def _too_deep() -> ProtocolError:
    return ProtocolError(
        ErrorCode.VALIDATION_ERROR,
        "frame: nested too deeply",
        details=[{"loc": [], "msg": "JSON nested too deeply", "type": "too_deep"}],
    )


def parse_frame(text: str) -> tuple[Any, ClientFrame]:
    """Decode and validate one client text frame.

    Returns:
        ``(raw_dict, frame)``.

    Raises:
        ProtocolError: ``invalid_json`` (not JSON), ``validation_error`` (not an object, no
            string ``type``, a lone surrogate escape in any string, nesting deeper than the
            parser's recursion limit, or a bad field; ``details`` lists each problem),
            ``unknown_type``.
    """
    try:
        raw = json.loads(text)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as error:
        raise ProtocolError(ErrorCode.INVALID_JSON) from error
    if "\\u" in text:  # a lone surrogate can only arrive as an escape: the text itself is UTF-8
        where = surrogate_path(raw)
        if where is not None:
            # A key may itself hold the surrogate: show it escaped, never echo it.
            loc = [str(part).encode("utf-8", "backslashreplace").decode() for part in where]
            raise ProtocolError(
                ErrorCode.VALIDATION_ERROR,
                f"{'.'.join(loc) or 'frame'}: not valid Unicode (lone surrogate)",
                details=[{"loc": loc, "msg": "lone surrogate in string", "type": "unicode"}],
            )
    if not isinstance(raw, dict):
        raise ProtocolError(
            ErrorCode.VALIDATION_ERROR,
            "A frame must be a JSON object",
            details=[{"loc": [], "msg": "expected a JSON object", "type": "object_type"}],
        )
    frame_type = raw.get("type")
    if not isinstance(frame_type, str):
        raise ProtocolError(
            ErrorCode.VALIDATION_ERROR,
            "Field 'type' must be a string",
            details=[{"loc": ["type"], "msg": "expected a string", "type": "string_type"}],
        )
    if frame_type not in CLIENT_FRAME_TYPES:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE)
    try:
        return raw, _client_frame.validate_python(raw)
    except RecursionError:
        raise _too_deep() from None
    except PydanticValidationError as error:
        details = [
            {"loc": [str(p) for p in item["loc"][1:]], "msg": item["msg"], "type": item["type"]}
            for item in error.errors(include_url=False, include_context=False, include_input=False)
        ]
        first = details[0]
        shown = ".".join(first["loc"]) or "frame"
        raise ProtocolError(
            ErrorCode.VALIDATION_ERROR, f"{shown}: {first['msg']}", details=details
        ) from error


# --- server frames ---------------------------------------------------------------------------


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, e.g. ``2026-11-22T10:00:00.123Z``.

    Without ``moment`` (now: every stored message), the formatted second is reused from the
    previous call within the same second (``strftime`` was ~3% of a chat replica's CPU).
    """
    if moment is None:
        now_ns = time.time_ns()
        second, rest = divmod(now_ns, 1_000_000_000)
        return f"{_second_prefix(second)}{rest // 1_000_000:03d}Z"
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@functools.lru_cache(maxsize=4)
def _second_prefix(second: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.`` of a Unix second (UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))


def dumps(obj: Any) -> str:
    """Compact JSON (no spaces), UTF-8 kept as is."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def encode_frame(frame_type: str, request_id: str | int | None = None, /, **fields: Any) -> str:
    """A server frame as text: ``{"type": frame_type, **fields}`` plus ``id`` when given."""
    body: dict[str, Any] = {"type": frame_type, **fields}
    if request_id is not None:
        body["id"] = request_id
    return dumps(body)


def error_frame(error: ProtocolError, request_id: str | int | None = None) -> str:
    """``{"type":"error","code":..,"message":..,"id":..}`` plus ``details`` / ``retry_after``.

    A ``validation_error`` always carries ``details`` (PROTOCOL.md section 7): one raised without
    them (a service's check, a rule across fields) gets one entry with its message.
    """
    extra = error.extra
    if error.code is ErrorCode.VALIDATION_ERROR and not extra.get("details"):
        extra = {**extra, "details": [{"loc": [], "msg": error.message, "type": "value_error"}]}
    return encode_frame("error", request_id, code=error.code.value, message=error.message, **extra)
