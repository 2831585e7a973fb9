"""Error codes of PROTOCOL.md section 7 and how they travel between services.

Two tables are kept apart, as centrifuge does (``errors.go`` vs ``disconnect.go``):
:class:`ErrorCode` are reply errors that leave a socket open; :class:`CloseCode` end it.

Over NATS, a service answers an error with the NATS service API headers
``Nats-Service-Error-Code`` (an HTTP-style status, e.g. ``"403"``) and ``Nats-Service-Error``
(``"<protocol code>: <human message>"``); :func:`encode_service_error` /
:func:`decode_service_error` are the two ends of that convention.
"""

from __future__ import annotations

import json
from enum import IntEnum, StrEnum
from typing import Any

SERVICE_ERROR_HEADER = "Nats-Service-Error"
SERVICE_ERROR_CODE_HEADER = "Nats-Service-Error-Code"


class ErrorCode(StrEnum):
    """``error.code`` values, PROTOCOL.md section 7."""

    INVALID_JSON = "invalid_json"
    UNKNOWN_TYPE = "unknown_type"
    VALIDATION_ERROR = "validation_error"
    UNSUPPORTED_FRAME = "unsupported_frame"
    AUTH_REQUIRED = "auth_required"
    AUTH_FAILED = "auth_failed"
    AUTH_TIMEOUT = "auth_timeout"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    INVALID_ROOM = "invalid_room"
    NOT_JOINED = "not_joined"
    ROOM_NOT_FOUND = "room_not_found"
    RATE_LIMITED = "rate_limited"
    #: v2 (PROTOCOL.md sections 8 and 10).
    MESSAGE_NOT_FOUND = "message_not_found"
    MUTED = "muted"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    # HTTP-only outcomes (auth API); never sent as a WebSocket error frame.
    CONFLICT = "conflict"
    NOT_FOUND = "not_found"
    UNAUTHORIZED = "unauthorized"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    REQUEST_TIMEOUT = "request_timeout"
    #: a webhook URL that is not http(s), does not resolve, or reaches a non-public address
    INVALID_URL = "invalid_url"
    #: an attachment whose content type (from its bytes) is not allowed
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    #: the attachments' Object Store is full (``NATTER_CHAT_ATTACHMENTS_MAX_BYTES``)
    INSUFFICIENT_STORAGE = "insufficient_storage"


class CloseCode(IntEnum):
    """WebSocket close codes natter uses (RFC 6455 section 7.4.1, PROTOCOL.md section 1)."""

    NORMAL = 1000
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013


#: Default human messages, PROTOCOL.md section 7 gives two of them verbatim.
DEFAULT_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.INVALID_JSON: "Invalid JSON format",
    ErrorCode.UNKNOWN_TYPE: "Unknown message type",
    ErrorCode.VALIDATION_ERROR: "Validation failed",
    ErrorCode.UNSUPPORTED_FRAME: "Binary frames are not supported",
    ErrorCode.AUTH_REQUIRED: "Authentication required",
    ErrorCode.AUTH_FAILED: "Authentication failed",
    ErrorCode.AUTH_TIMEOUT: "Authentication timeout",
    ErrorCode.TOKEN_EXPIRED: "Token expired",
    ErrorCode.FORBIDDEN: "Forbidden",
    ErrorCode.INVALID_ROOM: "Invalid room name",
    ErrorCode.NOT_JOINED: "Not joined to this room",
    ErrorCode.ROOM_NOT_FOUND: "Room not found",
    ErrorCode.RATE_LIMITED: "Rate limit exceeded",
    ErrorCode.MESSAGE_NOT_FOUND: "Message not found",
    ErrorCode.MUTED: "You are muted in this room",
    ErrorCode.UNAVAILABLE: "Service unavailable, retry",
    ErrorCode.INTERNAL: "Internal error",
    ErrorCode.CONFLICT: "Conflict",
    ErrorCode.NOT_FOUND: "Not found",
    ErrorCode.UNAUTHORIZED: "Unauthorized",
    ErrorCode.PAYLOAD_TOO_LARGE: "Request body too large",
    ErrorCode.REQUEST_TIMEOUT: "Request body too slow",
    ErrorCode.INVALID_URL: "URL refused",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "Content type not allowed",
    ErrorCode.INSUFFICIENT_STORAGE: "Attachment storage is full",
}

#: HTTP status for each code (used for the HTTP API and for Nats-Service-Error-Code).
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.UNKNOWN_TYPE: 400,
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.UNSUPPORTED_FRAME: 400,
    ErrorCode.AUTH_REQUIRED: 401,
    ErrorCode.AUTH_FAILED: 401,
    ErrorCode.AUTH_TIMEOUT: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.INVALID_ROOM: 400,
    ErrorCode.NOT_JOINED: 409,
    ErrorCode.ROOM_NOT_FOUND: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.INVALID_URL: 400,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.INSUFFICIENT_STORAGE: 507,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.MESSAGE_NOT_FOUND: 404,
    ErrorCode.MUTED: 403,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}


class ProtocolError(Exception):
    """An error with a PROTOCOL.md code, raised anywhere and turned into a frame or a response.

    Attributes:
        code: the :class:`ErrorCode`.
        message: human readable text, safe to show to the client (no internals).
        extra: additional fields for the error frame (``details``, ``retry_after``).
    """

    def __init__(self, code: ErrorCode, message: str | None = None, **extra: Any) -> None:
        self.code = ErrorCode(code)
        self.message = message or DEFAULT_MESSAGES[self.code]
        self.extra = extra
        super().__init__(f"{self.code}: {self.message}")

    @property
    def status(self) -> int:
        """HTTP status for this error (400..503)."""
        return HTTP_STATUS[self.code]


def encode_service_error(error: ProtocolError) -> tuple[str, str]:
    """Return ``(Nats-Service-Error-Code, Nats-Service-Error)`` header values for ``error``."""
    message = error.message.replace("\r", " ").replace("\n", " ")
    return str(error.status), f"{error.code.value}: {message}"


#: Extra error fields that may travel in an error reply's JSON body (PROTOCOL.md section 7).
EXTRA_FIELDS = ("retry_after", "details")


def encode_error_body(error: ProtocolError) -> bytes:
    """The error reply body: a JSON object with the error's extra fields, or empty."""
    extra = {key: error.extra[key] for key in EXTRA_FIELDS if key in error.extra}
    return json.dumps(extra, separators=(",", ":")).encode() if extra else b""


def decode_service_error(headers: dict[str, str] | None, data: bytes = b"") -> ProtocolError | None:
    """Inverse of :func:`encode_service_error` (+ :func:`encode_error_body`); ``None`` when the
    headers carry no error.

    An error header without a known protocol code (e.g. a raw ``nats.micro`` ``500``) becomes
    ``internal`` so that internals never reach a client.
    """
    if not headers or SERVICE_ERROR_CODE_HEADER not in headers:
        return None
    text = headers.get(SERVICE_ERROR_HEADER, "")
    code_text, _, message = text.partition(": ")
    try:
        code = ErrorCode(code_text)
    except ValueError:
        return ProtocolError(ErrorCode.INTERNAL)
    extra: dict[str, Any] = {}
    if data:
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        if isinstance(body, dict):
            extra = {key: body[key] for key in EXTRA_FIELDS if key in body}
    return ProtocolError(code, message or None, **extra)
