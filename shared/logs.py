"""Logging setup: one format for every process, and redaction of tokens (DESIGN.md rule 12).

uvicorn's access log prints request lines with their query string, and ``/ws?token=...`` carries
an access token there; :class:`RedactTokens` rewrites such values before any handler sees them.
"""

from __future__ import annotations

import logging
import re

_SECRET_RE = re.compile(r"(?i)((?:access_token|refresh_token|token|password)(?:=|\"?\s*:\s*\"?))[^&\s\"']+")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_URL_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")


def redact(text: str) -> str:
    """Replace token, password, JWT values and URL credentials (``nats://user:pw@host``) in
    ``text`` with ``[redacted]``."""
    text = _SECRET_RE.sub(r"\1[redacted]", text)
    text = _BEARER_RE.sub(r"\1[redacted]", text)
    text = _URL_USERINFO_RE.sub(r"\1[redacted]@", text)
    return _JWT_RE.sub("[redacted]", text)


class RedactTokens(logging.Filter):
    """A logging filter that redacts secrets from the formatted message and its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):
                return True
            record.msg = redact(message)
            record.args = None
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


#: INFO lines logged on ``uvicorn.error`` for every WebSocket: uvicorn's accept line (its ``%s``
#: arguments: client, path?query) and the ``websockets`` protocol's open/close lines.
SOCKET_LIFECYCLE_LINES = frozenset({'%s - "WebSocket %s" [accepted]', "connection open", "connection closed"})


class DropSocketLifecycle(logging.Filter):
    """Drops the per-socket INFO lines of :data:`SOCKET_LIFECYCLE_LINES` (kept at DEBUG level).

    A gateway accepting a thousand sockets a second would log thousands of lines a second, the
    accept line carrying a token to redact; connects and closes are counted in ``/metrics``
    instead. Refused handshakes (403 and other statuses) are still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.msg in SOCKET_LIFECYCLE_LINES)


def configure_logging(level: str = "INFO") -> None:
    """Configure the root logger once: ``time level logger message``, secrets redacted.

    The filter is also attached to uvicorn's loggers, which do not propagate to the root;
    above DEBUG, the per-socket lifecycle lines are dropped first (:class:`DropSocketLifecycle`).
    """
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not any(getattr(h, "_natter", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler._natter = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        handler.addFilter(RedactTokens())
        root.addHandler(handler)
    error_log = logging.getLogger("uvicorn.error")
    quiet = logging.getLevelName(level.upper()) != logging.DEBUG
    if quiet and not any(isinstance(f, DropSocketLifecycle) for f in error_log.filters):
        error_log.addFilter(DropSocketLifecycle())  # before RedactTokens: no redaction work
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error", "nats"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
