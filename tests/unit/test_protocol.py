"""Client frame validation and subject-token rules (pure logic)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.ratelimit import AbuseCounter, KeyedBuckets, TokenBucket, retry_after_seconds
from shared import subjects
from shared.errors import ErrorCode, ProtocolError, decode_service_error, encode_service_error
from shared.internal import with_request_id
from shared.protocol import ChatMessageFrame, parse_frame, request_id_of, surrogate_path, utc_timestamp


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", ErrorCode.INVALID_JSON),
        ("[1,2]", ErrorCode.VALIDATION_ERROR),
        ('{"room":"x"}', ErrorCode.VALIDATION_ERROR),
        ('{"type":"dance"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type":"chat_message","room":"a","message":42}', ErrorCode.VALIDATION_ERROR),
        ('{"type":"chat_message","room":"a","message":"   "}', ErrorCode.VALIDATION_ERROR),
        ('{"type":"chat_message","room":"a","message":"' + "x" * 4001 + '"}', ErrorCode.VALIDATION_ERROR),
        ('{"type":"join","room":"a","since":-1}', ErrorCode.VALIDATION_ERROR),
        ('{"type":"history","room":"a","limit":101}', ErrorCode.VALIDATION_ERROR),
        ('{"type":"ping","id":"' + "i" * 65 + '"}', ErrorCode.VALIDATION_ERROR),
    ],
)
def test_bad_frames_get_the_protocol_code(text: str, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_frame(text)
    assert caught.value.code is code


def test_message_is_trimmed() -> None:
    _, frame = parse_frame('{"type":"chat_message","room":"general","message":"  hi  ","id":7}')
    assert isinstance(frame, ChatMessageFrame)
    assert frame.message == "hi" and frame.id == 7


@given(st.text(min_size=1, max_size=70))
def test_no_room_name_can_widen_a_subject(name: str) -> None:
    if subjects.is_valid_room(name):
        assert not set(name) & {".", "*", ">", " ", "\t", "\n"}
        assert subjects.deliver_room(name).count(".") == 2
    else:
        with pytest.raises(ProtocolError):
            subjects.deliver_room(name)


@pytest.mark.parametrize("name", ["a.b", "a*", "a>", "a b", "General", "-x", "", "x" * 65])
def test_invalid_room_names(name: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        subjects.check_room(name)
    assert caught.value.code is ErrorCode.INVALID_ROOM


def test_service_error_headers_round_trip() -> None:
    status, description = encode_service_error(ProtocolError(ErrorCode.FORBIDDEN, "Private room"))
    assert status == "403"
    error = decode_service_error({"Nats-Service-Error-Code": status, "Nats-Service-Error": description})
    assert error is not None and error.code is ErrorCode.FORBIDDEN and error.message == "Private room"
    leaked = decode_service_error({"Nats-Service-Error-Code": "500", "Nats-Service-Error": "KeyError('x')"})
    assert leaked is not None and leaked.code is ErrorCode.INTERNAL and "KeyError" not in leaked.message


@given(st.one_of(st.integers(), st.text(max_size=64)))
def test_request_id_splice_is_valid_json(request_id: int | str) -> None:
    frame = b'{"type":"ack","seq":3}'
    assert json.loads(with_request_id(frame, request_id)) == {"type": "ack", "seq": 3, "id": request_id}


def test_token_bucket_burst_then_rate() -> None:
    bucket = TokenBucket(rate=20, burst=40)
    now = bucket.stamp
    assert all(bucket.take(now) == 0.0 for _ in range(40))
    wait = bucket.take(now)
    assert 0.04 < wait <= 0.05 + 1e-9
    assert bucket.take(now + 0.051) == 0.0


def test_keyed_buckets_are_per_key_and_bounded() -> None:
    buckets = KeyedBuckets(rate=1, burst=2, capacity=2)
    now = 1_000_000.0
    assert buckets.take("alice", now) == 0.0 and buckets.take("alice", now) == 0.0
    assert buckets.take("alice", now) > 0  # alice's burst is spent
    assert buckets.take("bob", now) == 0.0  # bob has his own
    assert buckets.take("alice", now + 1.0) == 0.0  # one token a second
    buckets.take("carol", now + 1.0)  # a third key drops the least recently used (bob)
    assert set(buckets._buckets) == {"alice", "carol"}


def test_abuse_counter_window() -> None:
    counter = AbuseCounter(limit=3, window=10)
    assert not counter.hit(0) and not counter.hit(1)
    assert counter.hit(2)
    assert not AbuseCounter(limit=2, window=1).hit(0)


@given(st.floats(min_value=1e-9, max_value=100, allow_nan=False))
def test_retry_after_is_rounded_up_to_hundredths(wait: float) -> None:
    announced = retry_after_seconds(wait)
    assert announced >= wait - 1e-9 and announced >= 0.01
    assert announced - wait < 0.01 + 1e-9
    assert round(announced, 2) == announced


def test_only_frames_before_the_announced_time_count_as_abuse() -> None:
    counter = AbuseCounter(limit=3, window=10)
    now = 100.0
    for _ in range(50):  # an obedient client: back exactly when told, refused again each time
        abusive, retry_after = counter.reject(0.05, now)
        assert not abusive and retry_after == 0.05
        now += retry_after
    flooder = AbuseCounter(limit=3, window=10)
    results = [flooder.reject(0.05, 200.0 + n * 0.001)[0] for n in range(4)]
    assert results == [False, False, False, True]  # the first refusal is not early; 3 early ones are


def test_lone_surrogates_are_validation_errors_with_a_path() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_frame('{"type":"ping","id":"\\ud800"}')
    assert caught.value.code is ErrorCode.VALIDATION_ERROR
    assert caught.value.extra["details"][0]["loc"] == ["id"]
    with pytest.raises(ProtocolError) as caught:
        parse_frame('{"type":"join","room":"general","x":[{"\\udc00":1}]}')
    assert caught.value.extra["details"][0]["loc"] == ["x", "0", "\\udc00"]
    # A proper pair of escapes is one code point, not a surrogate.
    _, frame = parse_frame('{"type":"chat_message","room":"general","message":"\\ud83d\\ude00"}')
    assert getattr(frame, "message", None) == "\U0001f600"
    assert request_id_of({"id": "\ud800"}) is None


def test_deep_nesting_is_a_validation_error() -> None:
    for deep in ("[" * 10_000 + "]" * 10_000, '{"a":' * 10_000 + "1" + "}" * 10_000):
        with pytest.raises(ProtocolError) as caught:
            parse_frame('{"type":"ping","x":' + deep + "}")
        assert caught.value.code is ErrorCode.VALIDATION_ERROR and caught.value.extra["details"]
    assert surrogate_path(json.loads("[" * 900 + '"\\ud800"' + "]" * 900)) == [0] * 900


def test_timestamp_format() -> None:
    stamp = utc_timestamp()
    assert stamp.endswith("Z") and len(stamp) == len("2026-11-22T10:00:00.123Z")


def test_timestamp_now_matches_the_datetime_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    import shared.protocol as protocol

    moment = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
    ns = int(moment.timestamp()) * 1_000_000_000 + 123_456_000
    for offset_ms in (0, 877, 1000):  # same second (cached prefix), then the next second
        monkeypatch.setattr(protocol.time, "time_ns", lambda o=offset_ms: ns + o * 1_000_000)
        expected = utc_timestamp(datetime.fromtimestamp((ns + offset_ms * 1_000_000) / 1e9, UTC))
        assert utc_timestamp() == expected
    assert utc_timestamp(moment) == "2026-11-22T10:00:00.123Z"


def test_log_redaction() -> None:
    from shared.logs import redact

    line = redact('GET /ws?token=abc.def.ghi "nats://natter:s3cret@nats:4222" Authorization: Bearer xyz')
    assert "abc.def" not in line and "s3cret" not in line and "xyz" not in line
    assert "nats://[redacted]@nats:4222" in line


def test_socket_lifecycle_lines_are_dropped_only_at_info() -> None:
    import logging

    from shared.logs import DropSocketLifecycle

    drop = DropSocketLifecycle()

    def record(msg: str, level: int = logging.INFO) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", level, __file__, 1, msg, None, None)

    assert not drop.filter(record('%s - "WebSocket %s" [accepted]'))
    assert not drop.filter(record("connection open"))
    assert not drop.filter(record("connection closed"))
    assert drop.filter(record('%s - "WebSocket %s" 403'))
    assert drop.filter(record("connection open", logging.WARNING))
