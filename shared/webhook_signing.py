"""Signing webhook deliveries (PROTOCOL.md section 12), for natter and for receivers.

Each delivery carries ``Natter-Webhook-Id`` (the webhook), ``Natter-Timestamp`` (Unix seconds)
and ``Natter-Signature: v1=<hex>``, the HMAC-SHA256 (RFC 2104) of ``"<timestamp>.<body>"`` with
the webhook's secret: the scheme of Stripe's and Standard Webhooks' signatures. A receiver
recomputes it over the raw body, compares in constant time, and refuses timestamps too far
from its clock (replays); then it de-duplicates by the event's ``id`` (delivery is at least
once).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Final

HDR_WEBHOOK_ID: Final = "Natter-Webhook-Id"
HDR_TIMESTAMP: Final = "Natter-Timestamp"
HDR_SIGNATURE: Final = "Natter-Signature"
#: Seconds a receiver should accept between ``Natter-Timestamp`` and its own clock.
DEFAULT_TOLERANCE: Final = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`` with ``secret`` (UTF-8)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def signed_headers(webhook_id: str, secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The three headers of a delivery of ``body`` (plus ``Content-Type``)."""
    timestamp = int(time.time() if now is None else now)
    return {
        "Content-Type": "application/json",
        HDR_WEBHOOK_ID: webhook_id,
        HDR_TIMESTAMP: str(timestamp),
        HDR_SIGNATURE: signature(secret, timestamp, body),
    }


def verify(
    secret: str,
    body: bytes,
    timestamp: str | None,
    header: str | None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True when ``header`` (``Natter-Signature``) is a valid ``v1`` signature of ``body`` at
    ``timestamp`` (``Natter-Timestamp``) within ``tolerance`` seconds of ``now``. Constant-time
    comparison (``hmac.compare_digest``); several comma-separated signatures are accepted (one
    must match), so a secret can be rotated."""
    if not timestamp or not header or not timestamp.isdigit():
        return False
    stamp = int(timestamp)
    if abs((time.time() if now is None else now) - stamp) > tolerance:
        return False
    expected = signature(secret, stamp, body)
    return any(hmac.compare_digest(expected, candidate.strip()) for candidate in header.split(","))
