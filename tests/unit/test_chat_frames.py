"""chat_service's client frames: exact compact bytes, no ``id``, stored bodies spliced as is."""

from __future__ import annotations

import json

import pytest

from chat_service import frames
from chat_service.frames import OnlineUser
from chat_service.roomlog import bodies
from shared.errors import ProtocolError
from shared.internal import with_request_id

DATA = bodies.message_body(
    room="general",
    seq=58,
    user_id="u1",
    username="alice",
    message='Hello "world" ünïcode 🙂',
    timestamp="2026-11-22T10:00:00.123Z",
    client_msg_id="0b5e",
)


def test_message_data_is_the_protocol_data_object() -> None:
    assert json.loads(DATA) == {
        "id": "general:58",
        "seq": 58,
        "user_id": "u1",
        "username": "alice",
        "message": 'Hello "world" ünïcode 🙂',
        "timestamp": "2026-11-22T10:00:00.123Z",
        "client_msg_id": "0b5e",
    }
    # compact (no spaces between tokens) and in the protocol's field order
    assert DATA == json.dumps(json.loads(DATA), separators=(",", ":"), ensure_ascii=False).encode()
    assert list(json.loads(DATA)) == [
        "id",
        "seq",
        "user_id",
        "username",
        "message",
        "timestamp",
        "client_msg_id",
    ]
    assert "ünïcode".encode() in DATA  # UTF-8 kept, not \\u-escaped


def test_message_data_without_client_msg_id_is_null() -> None:
    data = bodies.message_body(
        room="r", seq=1, user_id="u", username="n", message="m", timestamp="t", client_msg_id=None
    )
    assert json.loads(data)["client_msg_id"] is None


def test_delivery_frame_splices_the_stored_bytes() -> None:
    frame = bodies.frame("general", DATA)
    assert frame == b'{"type":"message","room":"general","data":' + DATA + b"}"
    assert json.loads(frame) == {"type": "message", "room": "general", "data": json.loads(DATA)}


def test_ack_frame() -> None:
    frame = frames.ack_frame(
        room="general", client_msg_id="0b5e", seq=58, timestamp="2026-11-22T10:00:00.123Z"
    )
    assert frame == (
        b'{"type":"ack","room":"general","client_msg_id":"0b5e","seq":58,'
        b'"message_id":"general:58","timestamp":"2026-11-22T10:00:00.123Z"}'
    )


def test_joined_frame_shape_and_order() -> None:
    second = bodies.message_body(
        room="general", seq=59, user_id="u2", username="bob", message="hi", timestamp="t", client_msg_id=None
    )
    frame = frames.joined_frame(
        room="general",
        last_seq=59,
        online=[OnlineUser("u1", "alice"), OnlineUser("u2", "bob")],
        messages=[DATA, second],
        recovered=True,
    )
    decoded = json.loads(frame)
    assert list(decoded) == [
        "type",
        "room",
        "last_seq",
        "read_seq",
        "unread",
        "online",
        "messages",
        "recovered",
    ]
    assert decoded["online"] == [{"user_id": "u1", "username": "alice"}, {"user_id": "u2", "username": "bob"}]
    assert [m["seq"] for m in decoded["messages"]] == [58, 59]
    assert decoded["recovered"] is True
    assert b'"messages":[' + DATA + b"," + second + b"]" in frame
    assert "id" not in decoded


def test_empty_joined_and_history_frames() -> None:
    assert frames.joined_frame(room="r", last_seq=0, online=[], messages=[], recovered=False) == (
        b'{"type":"joined","room":"r","last_seq":0,"read_seq":0,"unread":0,"online":[],"messages":[],'
        b'"recovered":false}'
    )
    assert frames.history_frame(room="r", messages=[], has_more=False) == (
        b'{"type":"history","room":"r","messages":[],"has_more":false}'
    )


def test_history_frame() -> None:
    frame = frames.history_frame(room="general", messages=[DATA], has_more=True)
    assert json.loads(frame) == {
        "type": "history",
        "room": "general",
        "messages": [json.loads(DATA)],
        "has_more": True,
    }


def test_presence_frames() -> None:
    assert frames.presence_frame(room="r", online=[OnlineUser("u1", "alice")]) == (
        b'{"type":"presence","room":"r","online":[{"user_id":"u1","username":"alice"}]}'
    )
    assert frames.presence_change_frame("user_joined", room="r", user_id="u1", username="alice") == (
        b'{"type":"user_joined","room":"r","user_id":"u1","username":"alice"}'
    )
    assert frames.presence_change_frame("user_left", room="r", user_id="u1", username="alice") == (
        b'{"type":"user_left","room":"r","user_id":"u1","username":"alice"}'
    )
    assert frames.left_frame("r") == b'{"type":"left","room":"r"}'


def test_gateway_can_splice_the_request_id() -> None:
    frame = frames.history_frame(room="general", messages=[DATA], has_more=False)
    assert json.loads(with_request_id(frame, "req-1"))["id"] == "req-1"


def test_decode_refuses_non_objects() -> None:
    assert bodies.decode(DATA)["seq"] == 58
    with pytest.raises(ProtocolError):
        bodies.decode(b"[1]")


def test_event_ack_frame_with_and_without_a_stored_event() -> None:
    assert frames.event_ack_frame(room="r", client_msg_id="c", seq=60, target=58, timestamp="t") == (
        b'{"type":"ack","room":"r","client_msg_id":"c","seq":60,"target":58,"timestamp":"t"}'
    )
    assert json.loads(frames.event_ack_frame(room="r", client_msg_id=None, seq=None, target=58)) == {
        "type": "ack",
        "room": "r",
        "client_msg_id": None,
        "seq": None,
        "target": 58,
        "timestamp": None,
    }


@pytest.mark.parametrize(
    ("budget", "keep", "expected"),
    [
        (100, "newest", [b"aaa", b"bbbb", b"cc"]),
        (9, "newest", [b"bbbb", b"cc"]),  # 4 + 1 + 2 = 7; adding 3 + 1 would be 11
        (8, "oldest", [b"aaa", b"bbbb"]),
        (2, "newest", [b"cc"]),
        (1, "newest", []),
        (0, "oldest", []),
    ],
)
def test_fit_messages(budget: int, keep: str, expected: list[bytes]) -> None:
    assert frames.fit_messages([b"aaa", b"bbbb", b"cc"], budget, keep=keep) == expected  # type: ignore[arg-type]
