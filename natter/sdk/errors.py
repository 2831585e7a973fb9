"""Exceptions raised by the natter SDK.

Two families, kept apart like the protocol's two tables (PROTOCOL.md sections 1 and 7):

- :class:`RequestError` and its subclasses: the server answered one request with an ``error``
  frame (``code``, ``message``, optional ``retry_after`` / ``details``); the socket stays open.
- :class:`AuthError` (:class:`AuthenticationFailed`, :class:`SessionRevoked`): the server refused
  or ended the session (close 1008 "auth failed" / "session revoked", or a refresh token that no
  longer works). The client stops; iteration and every pending request raise it.

:class:`HTTPError` is an HTTP API error (PROTOCOL.md section 6), :class:`RequestTimeout` a request
that got no answer before its deadline, :class:`ConnectionLost` an answer lost with the socket for
a request that is not resent, :class:`ClientClosed` any use after :meth:`NatterClient.close`.
"""

from __future__ import annotations

from typing import Any


class NatterError(Exception):
    """Base class of every SDK exception."""


class RequestError(NatterError):
    """An ``error`` answer to a request (PROTOCOL.md section 7).

    Attributes:
        code: the protocol code, e.g. ``"forbidden"``.
        message: the server's human readable text.
        retry_after: seconds to wait before retrying (``rate_limited`` only), else ``None``.
        details: the ``validation_error`` problem list, else ``None``.
        frame: the whole error frame as received.
    """

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        retry_after: float | None = None,
        details: list[Any] | None = None,
        frame: dict[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.details = details
        self.frame = frame or {"type": "error", "code": code, "message": message}
        super().__init__(f"{code}: {message}" if message else code)


class InvalidJSON(RequestError):
    """``invalid_json``."""


class UnknownType(RequestError):
    """``unknown_type``."""


class ValidationFailed(RequestError):
    """``validation_error``; :attr:`details` lists each problem."""


class UnsupportedFrame(RequestError):
    """``unsupported_frame``."""


class Forbidden(RequestError):
    """``forbidden``: e.g. a private room without membership."""


class InvalidRoom(RequestError):
    """``invalid_room``: the name does not match ``^[a-z0-9][a-z0-9_-]{0,63}$``."""


class NotJoined(RequestError):
    """``not_joined``: send/typing/leave for a room this socket has not joined."""


class RoomNotFound(RequestError):
    """``room_not_found``."""


class MessageNotFound(RequestError):
    """``message_not_found`` (v2): the target or ``reply_to`` is missing or deleted."""


class Muted(RequestError):
    """``muted`` (v2): a moderator muted you in this room."""


class RateLimited(RequestError):
    """``rate_limited``; :attr:`retry_after` says how long to wait (seconds)."""


class Unavailable(RequestError):
    """``unavailable``: a backend did not answer in time; safe to retry (same ``client_msg_id``)."""


class InternalError(RequestError):
    """``internal``."""


#: Error class per protocol code; any other code is a plain :class:`RequestError`.
ERROR_CLASSES: dict[str, type[RequestError]] = {
    "invalid_json": InvalidJSON,
    "unknown_type": UnknownType,
    "validation_error": ValidationFailed,
    "unsupported_frame": UnsupportedFrame,
    "forbidden": Forbidden,
    "invalid_room": InvalidRoom,
    "not_joined": NotJoined,
    "room_not_found": RoomNotFound,
    "message_not_found": MessageNotFound,
    "muted": Muted,
    "rate_limited": RateLimited,
    "unavailable": Unavailable,
    "internal": InternalError,
}


def error_from_frame(frame: dict[str, Any]) -> RequestError:
    """The typed exception for an ``error`` frame (``{"type":"error","code",..}``)."""
    code = str(frame.get("code") or "internal")
    retry_after = frame.get("retry_after")
    details = frame.get("details")
    return ERROR_CLASSES.get(code, RequestError)(
        code,
        str(frame.get("message") or ""),
        retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
        details=details if isinstance(details, list) else None,
        frame=frame,
    )


class RequestTimeout(NatterError, TimeoutError):
    """No answer before the request's deadline (``request_timeout``, or ``send_deadline`` for
    :meth:`NatterClient.send`)."""


class ConnectionLost(NatterError, ConnectionError):
    """The socket closed before the answer to a request that is not resent (internal requests,
    token refresh on the live socket)."""


class ClientClosed(NatterError):
    """The client was closed (:meth:`NatterClient.close`)."""


class ConnectTimeout(NatterError, TimeoutError):
    """:meth:`NatterClient.connect` could not connect and authenticate within its timeout."""


class AuthError(NatterError):
    """The session cannot continue: the client stops.

    Attributes:
        reason: what ended it (``"auth failed"``, ``"session revoked"``, ``"token expired"``,
            ``"refresh rejected"``...).
        message: the server's text when it sent one.
    """

    def __init__(self, reason: str, message: str = "") -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}" if message else reason)


class AuthenticationFailed(AuthError):
    """Close 1008 "auth failed", an ``auth_failed`` answer at connect, an expired token that
    cannot be refreshed, or a refresh token the server rejects (401)."""


class SessionRevoked(AuthError):
    """Close 1008 "session revoked": the user logged out (PROTOCOL.md section 2)."""


class HTTPError(NatterError):
    """An HTTP API error (PROTOCOL.md section 6; docs/protocol.md "HTTP API").

    Attributes:
        status: the HTTP status (400..503).
        detail: the ``detail`` text of the body.
        code: the protocol ``code`` of the body when present (e.g. ``"conflict"``), else ``None``.
        retry_after: seconds from a ``Retry-After`` header (429), else ``None``.
    """

    def __init__(
        self, status: int, detail: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        self.status = status
        self.detail = detail
        self.code = code
        self.retry_after = retry_after
        super().__init__(f"HTTP {status}: {detail}")


class GatewayUnreachable(NatterError, ConnectionError):
    """No gateway URL accepted the HTTP connection."""
