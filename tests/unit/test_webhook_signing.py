"""shared.webhook_signing: HMAC-SHA256 signatures of webhook deliveries."""

from __future__ import annotations

import hashlib
import hmac

from shared.webhook_signing import HDR_SIGNATURE, HDR_TIMESTAMP, signature, signed_headers, verify


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"id":"room:general:1"}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("s3cret", 1_700_000_000, body) == f"v1={expected}"


def test_verify_accepts_the_signed_body_and_refuses_everything_else() -> None:
    body = b'{"id":"x"}'
    headers = signed_headers("wh1", "s3cret", body, now=1_700_000_000)
    stamp, sig = headers[HDR_TIMESTAMP], headers[HDR_SIGNATURE]
    assert verify("s3cret", body, stamp, sig, now=1_700_000_100)
    assert verify("s3cret", body, stamp, f"v1=deadbeef, {sig}", now=1_700_000_000)  # rotation
    assert not verify("other", body, stamp, sig, now=1_700_000_000)
    assert not verify("s3cret", body + b" ", stamp, sig, now=1_700_000_000)
    assert not verify("s3cret", body, stamp, sig, now=1_700_000_000 + 301)  # a replay, too late
    assert not verify("s3cret", body, "abc", sig, now=1_700_000_000)
    assert not verify("s3cret", body, stamp, None, now=1_700_000_000)
