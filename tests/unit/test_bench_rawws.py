"""natter.bench.rawws (the load generator's RFC 6455 client): framing, masking, handshake checks
and the protocol's answers to control frames, on bytes only (no socket).

The protocol tests drive :class:`RawWebSocket` through its ``asyncio.Protocol`` methods with a
transport stand-in that records what the client writes; the bytes it writes are unmasked and
parsed back as a server would.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from natter.bench import rawws
from natter.bench.clients import Sink, marker
from natter.bench.rawws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    FrameParser,
    HandshakeError,
    RawWebSocket,
)


def server_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """An unmasked frame as a server sends it (RFC 6455 5.2), with the shortest length form."""
    first = (0x80 if fin else 0) | rsv | opcode
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return bytes((first, 126)) + length.to_bytes(2, "big") + payload
    return bytes((first, 127)) + length.to_bytes(8, "big") + payload


def read_client_frame(data: bytes) -> tuple[int, bool, bytes, int]:
    """Parse one masked client frame: ``(opcode, fin, unmasked payload, frame length)``."""
    assert data[1] & 0x80, "client frames must be masked"
    length, start = data[1] & 0x7F, 2
    if length == 126:
        length, start = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        length, start = int.from_bytes(data[2:10], "big"), 10
    key = data[start : start + 4]
    body = data[start + 4 : start + 4 + length]
    assert len(body) == length
    return data[0] & 0x0F, bool(data[0] & 0x80), rawws._py_apply_mask(body, key), start + 4 + length


# --- framing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_parser_reads_7_16_and_64_bit_lengths(size: int) -> None:
    payload = os.urandom(size)
    frame = server_frame(OP_BINARY, payload)
    header = {0: 2, 125: 2, 126: 4, 65535: 4, 65536: 10}[size]
    assert len(frame) == header + size
    assert FrameParser().feed(frame) == [(OP_BINARY, payload)]


@pytest.mark.parametrize("size", [125, 126, 65536])
def test_parser_keeps_a_partial_frame_until_it_is_complete(size: int) -> None:
    payload = b"x" * size
    frame = server_frame(OP_TEXT, payload) + server_frame(OP_TEXT, b"next")
    parser = FrameParser()
    out: list[tuple[int, bytes]] = []
    for cut in (1, 3, 9, size // 2 + 5):  # inside the header, inside the 64-bit length, in the body
        out += parser.feed(frame[:cut])
        frame = frame[cut:]
    out += parser.feed(frame)
    assert out == [(OP_TEXT, payload), (OP_TEXT, b"next")]
    assert parser.idle


def test_parser_reassembles_fragmented_text_around_a_ping() -> None:
    stream = (
        server_frame(OP_TEXT, b'{"type":', fin=False)
        + server_frame(OP_CONTINUATION, b'"mess', fin=False)
        + server_frame(OP_PING, b"hb")  # control frames may come between fragments (RFC 5.4)
        + server_frame(OP_CONTINUATION, b'age"}')
    )
    parser = FrameParser()
    first = parser.feed(stream[:12])
    assert first == [] and not parser.idle
    assert parser.feed(stream[12:]) == [(OP_PING, b"hb"), (OP_TEXT, b'{"type":"message"}')]
    assert parser.idle


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (bytes((0x81, 0x80 | 2)) + b"\x00\x00\x00\x00ab", 1002),  # masked server frame
        (server_frame(OP_TEXT, b"a", rsv=0x40), 1002),  # RSV1 without an extension
        (server_frame(OP_CONTINUATION, b"a"), 1002),  # continuation of nothing
        (server_frame(OP_PING, b"a", fin=False), 1002),  # fragmented control frame
        (server_frame(OP_PING, b"a" * 126), 1002),  # control payload over 125 bytes
        (server_frame(0x3, b"a"), 1002),  # reserved opcode
        (server_frame(OP_TEXT, b"a" * 2000), 1009),  # over max_size
    ],
)
def test_parser_rejects_protocol_violations(frame: bytes, code: int) -> None:
    with pytest.raises(FrameError) as failed:
        FrameParser(max_size=1024).feed(frame)
    assert failed.value.code == code


def test_parser_limits_a_fragmented_message_as_a_whole() -> None:
    stream = server_frame(OP_TEXT, b"a" * 600, fin=False) + server_frame(OP_CONTINUATION, b"a" * 600)
    with pytest.raises(FrameError) as failed:
        FrameParser(max_size=1024).feed(stream)
    assert failed.value.code == 1009


def test_close_code_parsing() -> None:
    assert rawws.parse_close(b"\x03\xe8") == 1000
    assert rawws.parse_close(b"\x03\xf0policy violation") == 1008
    assert rawws.parse_close(b"") == 1005  # no status code (RFC 6455 7.1.5)
    with pytest.raises(FrameError):
        rawws.parse_close(b"\x03")
    assert rawws.close_payload(1013, "full") == b"\x03\xf5full"


# --- masking and client frames -----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 1000, 70000])
def test_mask_round_trip_and_fallback_agree(size: int) -> None:
    data, key = os.urandom(size), os.urandom(4)
    masked = rawws.apply_mask(data, key)
    assert len(masked) == size
    assert rawws._py_apply_mask(data, key) == masked
    assert rawws.apply_mask(masked, key) == data
    assert rawws._py_apply_mask(masked, key) == data


def test_client_frame_matches_the_rfc_example() -> None:
    # RFC 6455 section 5.7: a single-frame masked text message "Hello".
    frame = rawws.client_frame(OP_TEXT, b"Hello", bytes.fromhex("37fa213d"))
    assert frame == bytes.fromhex("818537fa213d7f9f4d5158")


@pytest.mark.parametrize("size", [125, 126, 65536])
def test_client_frames_are_masked_with_a_fresh_key(size: int) -> None:
    payload = os.urandom(size)
    one, two = rawws.client_frame(OP_TEXT, payload), rawws.client_frame(OP_TEXT, payload)
    assert one != two  # a new random key per frame
    for frame in (one, two):
        assert read_client_frame(frame) == (OP_TEXT, True, payload, len(frame))


# --- handshake -------------------------------------------------------------------------------


def test_accept_key_matches_the_rfc_example() -> None:
    # RFC 6455 section 1.3.
    assert rawws.accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_response_checks() -> None:
    key = rawws.new_key()
    good = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        f"sec-websocket-accept: {rawws.accept_for(key)}"
    )
    rawws.check_handshake_response(good.encode(), key)
    failures = {
        "HTTP/1.1 403 Forbidden\r\ncontent-length: 0": "http 403",
        "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: bm9wZQ==": "bad accept",
        "HTTP/1.1 101 Switching Protocols": "bad accept",
        good + "\r\nSec-WebSocket-Extensions: permessage-deflate": "unrequested extension",
        "SSH-2.0-OpenSSH": "bad response",
    }
    for head, reason in failures.items():
        with pytest.raises(HandshakeError) as failed:
            rawws.check_handshake_response(head.encode(), key)
        assert str(failed.value) == reason


# --- the protocol ----------------------------------------------------------------------------


class RecordingTransport:
    """Collects what the protocol writes; ``close``/``abort`` only mark it closing."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def take(self) -> bytes:
        data, self.written = bytes(self.written), bytearray()
        return data


class Recorder:
    """A :class:`rawws.Listener` that keeps every call."""

    def __init__(self) -> None:
        self.texts: list[tuple[bytes, int]] = []
        self.binaries: list[bytes] = []
        self.closes: list[int] = []

    def ws_text(self, payload: bytes, now_ns: int) -> None:
        self.texts.append((payload, now_ns))

    def ws_binary(self, payload: bytes, now_ns: int) -> None:
        self.binaries.append(payload)

    def ws_closed(self, code: int) -> None:
        self.closes.append(code)


def opened(extra: bytes = b"") -> tuple[RawWebSocket, RecordingTransport, Recorder]:
    """A protocol past a valid handshake (``extra`` arrives in the same chunk as the response)."""
    listener = Recorder()
    ws = RawWebSocket(listener, "127.0.0.1", 8000, "/ws?token=abc", 2**20)
    transport = RecordingTransport()
    ws.connection_made(transport)  # type: ignore[arg-type]
    request = transport.take().decode()
    assert request.startswith("GET /ws?token=abc HTTP/1.1\r\n") and request.endswith("\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in request.split("\r\n")[1:] if ": " in line)
    assert headers["Host"] == "127.0.0.1:8000" and headers["Sec-WebSocket-Version"] == "13"
    assert headers["Upgrade"] == "websocket" and headers["Connection"] == "Upgrade"
    assert "Sec-WebSocket-Extensions" not in headers
    response = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {rawws.accept_for(headers['Sec-WebSocket-Key'])}\r\n\r\n"
    ).encode()
    ws.data_received(response[:20])
    assert not ws.opened.done()
    ws.data_received(response[20:] + extra)
    assert ws.opened.done() and ws.opened.exception() is None and ws.is_open
    return ws, transport, listener


async def test_frames_after_the_handshake_reach_the_listener_with_the_chunk_time() -> None:
    first = server_frame(OP_TEXT, b'{"type":"auth_success"}')
    ws, _, listener = opened(first)
    assert [text for text, _ in listener.texts] == [b'{"type":"auth_success"}']
    big = b"y" * 300
    chunk = server_frame(OP_TEXT, b"a") + server_frame(OP_BINARY, b"\x00") + server_frame(OP_TEXT, big)
    ws.data_received(chunk)
    assert [text for text, _ in listener.texts[1:]] == [b"a", big]
    assert listener.binaries == [b"\x00"]
    # one timestamp per data_received call, shared by the frames of that chunk
    assert listener.texts[1][1] == listener.texts[2][1] >= listener.texts[0][1]


async def test_one_frame_chunks_and_split_chunks_give_the_same_payloads() -> None:
    frames = [server_frame(OP_TEXT, b"m" * size) for size in (5, 125, 126, 4000, 65535, 65536)]
    whole, _, whole_listener = opened()
    for frame in frames:
        whole.data_received(frame)  # the one-frame fast path where it applies
    split, _, split_listener = opened()
    stream = b"".join(frames)
    for i in range(0, len(stream), 777):
        split.data_received(stream[i : i + 777])
    assert [t for t, _ in whole_listener.texts] == [t for t, _ in split_listener.texts]
    assert [len(t) for t, _ in whole_listener.texts] == [5, 125, 126, 4000, 65535, 65536]


async def test_ping_is_answered_with_a_masked_pong_of_the_same_payload() -> None:
    ws, transport, listener = opened()
    ws.data_received(server_frame(OP_PING, b"beat-1") + server_frame(OP_PONG, b"ignored"))
    written = transport.take()
    opcode, fin, payload, length = read_client_frame(written)
    assert (opcode, fin, payload) == (OP_PONG, True, b"beat-1")
    assert length == len(written)  # one pong, nothing for the server's pong
    assert listener.texts == [] and ws.is_open


async def test_server_close_is_echoed_once_reported_and_ends_the_transport() -> None:
    ws, transport, listener = opened()
    ws.data_received(server_frame(OP_CLOSE, rawws.close_payload(1013, "try again")))
    opcode, _, payload, _ = read_client_frame(transport.take())
    assert opcode == OP_CLOSE and rawws.parse_close(payload) == 1013
    assert transport.closed and not transport.aborted
    assert listener.closes == [1013] and not ws.is_open
    ws.connection_lost(None)
    assert listener.closes == [1013]  # reported once
    with pytest.raises(ConnectionError):
        await ws.send_text("late")


async def test_connection_lost_without_close_frame_reports_1006() -> None:
    ws, _, listener = opened()
    ws.connection_lost(ConnectionResetError())
    assert listener.closes == [1006] and ws.close_code == 1006


async def test_our_close_waits_for_the_server_and_is_not_reported() -> None:
    ws, transport, listener = opened()
    closing = asyncio.create_task(ws.close())
    await asyncio.sleep(0)
    opcode, _, payload, _ = read_client_frame(transport.take())
    assert opcode == OP_CLOSE and rawws.parse_close(payload) == 1000
    assert not closing.done()
    ws.data_received(server_frame(OP_CLOSE, rawws.close_payload(1000)))
    assert transport.take() == b""  # no second close frame
    assert transport.closed
    ws.connection_lost(None)
    await asyncio.wait_for(closing, 1)
    assert listener.closes == [] and not transport.aborted


async def test_our_close_aborts_when_the_server_never_answers() -> None:
    ws, transport, _ = opened()
    await ws.close(timeout=0.05)
    assert transport.aborted


async def test_bad_frame_fails_the_connection_with_its_code() -> None:
    ws, transport, listener = opened()
    ws.data_received(bytes((0x81, 0x81)) + b"\x00\x00\x00\x00a")  # masked server frame
    opcode, _, payload, _ = read_client_frame(transport.take())
    assert opcode == OP_CLOSE and rawws.parse_close(payload) == 1002
    assert transport.closed
    ws.connection_lost(None)
    assert listener.closes == [1002]


async def test_refused_handshake_fails_open_and_aborts() -> None:
    listener = Recorder()
    ws = RawWebSocket(listener, "h", 80, "/ws", 2**20)
    transport = RecordingTransport()
    ws.connection_made(transport)  # type: ignore[arg-type]
    ws.data_received(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
    assert isinstance(ws.opened.exception(), HandshakeError)
    assert str(ws.opened.exception()) == "http 403"
    assert transport.aborted
    ws.connection_lost(None)
    assert listener.closes == []  # a failed open is the opener's error, not a close


async def test_masked_text_send() -> None:
    ws, transport, _ = opened()
    await ws.send_text('{"type":"ping","text":"é"}')
    opcode, fin, payload, _ = read_client_frame(transport.take())
    assert (opcode, fin, payload.decode()) == (OP_TEXT, True, '{"type":"ping","text":"é"}')


# --- the sink on raw frames ------------------------------------------------------------------


def test_sink_accounts_raw_bytes_frames_like_text() -> None:
    sink = Sink()
    sink.reset(4)
    frame = ('{"type":"message","room":"r","data":{"message":"' + marker(1_000, 4, 3, 9) + '"}}').encode()
    sink.delivery(0, frame, 6_000)
    sink.delivery(1, frame, 7_000)
    sink.delivery(1, frame, 8_000)  # duplicate on slot 1
    sink.delivery(0, frame.decode(), 9_000)  # the same message as text: still a duplicate
    sink.delivery(2, marker(1_000, 3, 3, 9).encode(), 9_000)  # earlier phase
    sink.delivery(2, b'{"type":"message","data":{"message":"hi"}}', 9_000)
    assert (sink.unique, sink.duplicates, sink.late, sink.foreign) == (2, 2, 1, 1)
    assert sink.per_msg == {(3 << 24) | 9: 2}
    assert list(sink.latencies) == [5_000, 6_000]
    assert (sink.first_ns, sink.last_ns) == (6_000, 7_000)
