"""Attachments (PROTOCOL.md section 11) against the real stack: upload into the Object Store with
the type taken from the bytes, images measured and thumbnailed, the size limit enforced while
the body arrives, messages carrying files each used once, downloads only for readers of the room
(with nosniff and Content-Disposition), and a deleted message taking its files with it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import uuid
from typing import Any

import httpx
import nats
import pytest
from PIL import Image

from gateway.attachments import object_chunks
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from tests.conftest import NatsServer, Stack
from tests.support import User, WsClient, connect, join, register, service_token, unique_name


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(out, "PNG")
    return out.getvalue()


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.access_token}"}


async def upload(
    http: httpx.AsyncClient, user: User, room: str, data: bytes, name: str = "x.txt", kind: str = "text/plain"
) -> httpx.Response:
    """Upload with a misleading name and part type: natter must judge by the bytes."""
    return await http.post(
        f"/api/rooms/{room}/attachments", files={"file": (name, data, kind)}, headers=bearer(user)
    )


async def raw_upload(base_url: str, user: User, room: str, *, announce: int | None) -> tuple[int, int]:
    """POST a multipart upload of 20 MiB over a raw socket, 1 MiB at a time, reading the answer
    as soon as one comes: (HTTP status, body bytes sent before it came)."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    boundary = "natterboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'
    length = f"Content-Length: {announce}" if announce is not None else "Transfer-Encoding: chunked"
    writer.write(
        (
            f"POST /api/rooms/{room}/attachments HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {user.access_token}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n{length}\r\n\r\n"
        ).encode()
    )
    sent = 0
    answer = b""
    try:
        for n in range(21):
            with contextlib.suppress(TimeoutError):
                answer = await asyncio.wait_for(reader.read(1024), 0.2 if n else 0.5)
            if answer:
                break
            piece = (head.encode() if n == 0 else b"") + b"a" * (1024 * 1024)
            writer.write(piece if announce is not None else f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            sent += len(piece)
    except ConnectionError:
        answer = answer or await reader.read(1024)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return int(answer.split()[1]), sent


async def next_message(ws: WsClient, room: str) -> dict[str, object]:
    while True:
        frame = await ws.recv()
        if frame.get("type") == "message" and frame.get("room") == room:
            return dict(frame["data"])


async def test_an_image_travels_with_its_message_and_only_to_readers(
    stack: Stack, nats_server: NatsServer
) -> None:
    room = unique_name("files")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        alice, bob = await register(http), await register(http)
        a, b = await connect(stack.ws_url, alice.access_token), await connect(stack.ws_url, bob.access_token)
        await join(a, room)
        await join(b, room)
        image = png(800, 600)
        answer = await upload(http, alice, room, image)
        assert answer.status_code == 201, answer.text
        info = answer.json()
        assert info["content_type"] == "image/png" and (info["width"], info["height"]) == (800, 600)
        assert info["size"] == len(image) and info["name"] == "x.txt"

        ack = await a.request(
            {"type": "chat_message", "room": room, "message": "look", "attachments": [info["attachment_id"]]}
        )
        assert ack["type"] == "ack"
        delivered = await next_message(b, room)
        assert delivered["attachments"] == [info]
        again = await a.request(
            {"type": "chat_message", "room": room, "message": "again", "attachments": [info["attachment_id"]]}
        )
        assert again["type"] == "error" and again["code"] == "validation_error"

        got = await http.get(f"/api/attachments/{info['attachment_id']}", headers=bearer(bob))
        assert got.status_code == 200 and got.content == image
        assert got.headers["content-type"] == "image/png"
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-disposition"].startswith("inline;")
        thumb = await http.get(f"/api/attachments/{info['attachment_id']}?thumb=1", headers=bearer(bob))
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(thumb.content)) as small:
            assert small.format == "JPEG" and small.size == (320, 240)

        page = (await http.get(f"/api/rooms/{room}/messages", headers=bearer(bob))).json()
        assert page["messages"][-1]["attachments"] == [info]

        # deleting the message deletes the file
        deleted = await http.delete(f"/api/rooms/{room}/messages/{ack['seq']}", headers=bearer(alice))
        assert deleted.status_code == 204
        gone = await http.get(f"/api/attachments/{info['attachment_id']}", headers=bearer(alice))
        assert gone.status_code == 404
        nc = await nats.connect(nats_server.url)
        try:
            store = await nc.jetstream().object_store(subjects.OBJ_ATTACHMENTS)
            with pytest.raises(nats.js.errors.ObjectNotFoundError):
                await store.get(info["attachment_id"])
        finally:
            await nc.close()
        for ws in (a, b):
            await ws.close()


async def test_private_files_stay_private(stack: Stack) -> None:
    room = unique_name("priv")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        owner, outsider = await register(http), await register(http)
        created = await http.post("/api/rooms", json={"name": room, "private": True}, headers=bearer(owner))
        assert created.status_code == 201
        info = (await upload(http, owner, room, b"quarterly numbers\n")).json()
        assert info["content_type"] == "text/plain" and info["width"] is None
        refused = await http.get(f"/api/attachments/{info['attachment_id']}", headers=bearer(outsider))
        assert refused.status_code == 403
        mine = await http.get(f"/api/attachments/{info['attachment_id']}", headers=bearer(owner))
        assert mine.status_code == 200 and mine.headers["content-disposition"].startswith("attachment;")
        assert (await upload(http, outsider, room, b"let me in")).status_code == 403
        unknown = await http.get(f"/api/attachments/{uuid.uuid4().hex}", headers=bearer(owner))
        assert unknown.status_code == 404


async def test_bad_uploads_are_refused(stack: Stack) -> None:
    room = unique_name("files")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
        alice = await register(http)
        missing = await upload(http, alice, room, b"hello")
        assert missing.status_code == 404 and missing.json()["code"] == "room_not_found"  # not created yet
        assert (await http.post("/api/rooms", json={"name": room}, headers=bearer(alice))).status_code == 201
        elf = b"\x7fELF\x02\x01\x01" + bytes(200)
        refused = await upload(http, alice, room, elf, name="cat.png", kind="image/png")
        assert refused.status_code == 415 and refused.json()["code"] == "unsupported_media_type"
        fake_png = b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10
        assert (await upload(http, alice, room, fake_png)).status_code == 415
        empty = await http.post(f"/api/rooms/{room}/attachments", data={"x": "1"}, headers=bearer(alice))
        assert empty.status_code == 422
        # announced too big: 413 before a byte of the body is read
        status, sent = await raw_upload(stack.base_url, alice, room, announce=11 * 1024 * 1024)
        assert status == 413 and sent == 0
        # not announced (chunked): read as it arrives, refused once past the limit, not at the end
        status, sent = await raw_upload(stack.base_url, alice, room, announce=None)
        assert status == 413 and 10 * 1024 * 1024 < sent <= 12 * 1024 * 1024
        assert (await upload(http, alice, "Bad.Room", b"x")).status_code == 400


async def test_claims_are_exact_retries_answer_once_and_refusals_free_the_file(stack: Stack) -> None:
    """Each file goes with one message: someone else's file, a repeated id and a used file are
    refused; a retry of the same client_msg_id is the original's ack (one message, not two); a
    message refused after the claim (reply to a message that does not exist) leaves the file free."""
    room = unique_name("claims")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        alice, bob = await register(http), await register(http)
        a, b = await connect(stack.ws_url, alice.access_token), await connect(stack.ws_url, bob.access_token)
        await join(a, room)
        await join(b, room)
        mine = (await upload(http, alice, room, b"first file\n")).json()["attachment_id"]
        theirs = (await upload(http, bob, room, b"bob's file\n")).json()["attachment_id"]

        stolen = await a.request(
            {"type": "chat_message", "room": room, "message": "x", "attachments": [theirs]}
        )
        assert stolen["type"] == "error" and stolen["code"] == "validation_error", stolen
        twice = await a.request(
            {"type": "chat_message", "room": room, "message": "x", "attachments": [mine, mine]}
        )
        assert twice["type"] == "error" and twice["code"] == "validation_error", twice
        orphan_reply = await a.request(
            {"type": "chat_message", "room": room, "message": "x", "reply_to": 999_999, "attachments": [mine]}
        )
        assert orphan_reply["type"] == "error" and orphan_reply["code"] == "message_not_found", orphan_reply

        cmid = str(uuid.uuid4())
        frame = {
            "type": "chat_message",
            "room": room,
            "message": "files",
            "client_msg_id": cmid,
            "attachments": [mine],
        }
        first = await a.request(frame)
        assert first["type"] == "ack", first  # the refused reply did not keep the file
        retry = await a.request(frame)
        assert retry["type"] == "ack" and retry["seq"] == first["seq"], (first, retry)
        page = (await http.get(f"/api/rooms/{room}/messages", headers=bearer(bob))).json()
        carrying = [m for m in page["messages"] if m.get("attachments")]
        assert [m["seq"] for m in carrying] == [first["seq"]]
        assert all("attachments" not in m for m in page["messages"] if m["seq"] != first["seq"])


async def test_a_removed_member_loses_the_files_and_a_service_keeps_them(stack: Stack) -> None:
    """Download is decided now, not when the id was learned: removal from a private room turns a
    200 into 403; a service token reads any room's files (section 12)."""
    room = unique_name("gone")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        owner, bob = await register(http), await register(http)
        created = await http.post("/api/rooms", json={"name": room, "private": True}, headers=bearer(owner))
        assert created.status_code == 201
        added = await http.post(
            f"/api/rooms/{room}/members", json={"username": bob.username}, headers=bearer(owner)
        )
        assert added.status_code in (200, 201), added.text
        attachment_id = (await upload(http, owner, room, b"plans\n")).json()["attachment_id"]
        url = f"/api/attachments/{attachment_id}"
        assert (await http.get(url, headers=bearer(bob))).status_code == 200
        removed = await http.delete(f"/api/rooms/{room}/members/{bob.username}", headers=bearer(owner))
        assert removed.status_code in (200, 204), removed.text
        assert (await http.get(url, headers=bearer(bob))).status_code == 403
        token = await service_token(stack.nats.url)
        by_service = await http.get(url, headers={"Authorization": f"Bearer {token}"})
        assert by_service.status_code == 200 and by_service.content == b"plans\n"


def text_of(size: int, salt: str) -> bytes:
    """``size`` bytes of printable text that differ from position to position."""
    line = f"{salt} attachment line {{:08d}}\n"
    out = "".join(line.format(n) for n in range(size // len(line.format(0)) + 1))
    return out.encode()[:size]


async def test_downloads_stream_every_size_back_byte_for_byte(stack: Stack) -> None:
    """Downloads are streamed chunk by chunk (gateway.attachments.object_chunks): sizes at and
    around the Object Store's 128 KiB chunk and the 4-chunk read come back exact, with their
    Content-Length."""
    room = unique_name("files")
    chunk = 128 * 1024
    sizes = [1, chunk - 1, chunk, chunk + 1, 4 * chunk, 4 * chunk + 1, 9 * chunk + 4321]
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
        alice = await register(http)
        assert (await http.post("/api/rooms", json={"name": room}, headers=bearer(alice))).status_code == 201
        for size in sizes:
            data = text_of(size, salt=str(size))
            answer = await upload(http, alice, room, data)
            assert answer.status_code == 201, answer.text
            got = await http.get(f"/api/attachments/{answer.json()['attachment_id']}", headers=bearer(alice))
            assert got.status_code == 200
            assert int(got.headers["content-length"]) == size
            assert got.content == data, f"size {size}: {len(got.content)} bytes back"


async def test_a_chunk_stream_that_does_not_match_its_object_is_refused(nats_server: NatsServer) -> None:
    """object_chunks checks what it streamed against the object's size and SHA-256 digest
    before it lets the last chunk go: a short or altered object ends in ``unavailable`` with
    the body short of its length (the client sees a cut-off body), never a silently wrong
    file."""
    nc = await nats.connect(nats_server.url)
    try:
        store = await nc.jetstream().object_store(subjects.OBJ_ATTACHMENTS)
        name = uuid.uuid4().hex
        data = text_of(300 * 1024, salt="digest")
        await store.put(name, data)
        info = await store.get_info(name)
        whole = b"".join([piece async for piece in object_chunks(nc, info, per_read=2)])
        assert whole == data

        info.digest = "SHA-256=" + "A" * 43 + "="
        streamed = 0
        with pytest.raises(ProtocolError) as caught:
            async for piece in object_chunks(nc, info):
                streamed += len(piece)
        # the last chunk is held back until the digest matched: the body ends short
        assert caught.value.code is ErrorCode.UNAVAILABLE and 0 < streamed < len(data)

        info = await store.get_info(name)
        info.size = len(data) + 1  # the stored chunks end before the size says
        with pytest.raises(ProtocolError) as caught:
            async for _ in object_chunks(nc, info):
                pass
        assert caught.value.code is ErrorCode.UNAVAILABLE
        await store.delete(name)
    finally:
        await nc.close()


async def test_uploads_are_rate_limited_per_user(stack: Stack) -> None:
    """NATTER_GATEWAY_ATTACHMENT_UPLOAD_BURST (20) uploads at once, then 429 with Retry-After
    for that user only: another member of the room still uploads."""
    room = unique_name("files")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
        alice, bob = await register(http), await register(http)
        assert (await http.post("/api/rooms", json={"name": room}, headers=bearer(alice))).status_code == 201
        statuses = [(await upload(http, alice, room, b"file %d" % n)).status_code for n in range(20)]
        assert statuses == [201] * 20
        refused = await upload(http, alice, room, b"one too many")
        assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 3
        assert (await upload(http, bob, room, b"bob's file")).status_code == 201


async def test_uploads_no_message_took_are_swept_and_sent_ones_stay(stack_factory: Any) -> None:
    """An upload still unclaimed ``NATTER_CHAT_UNCLAIMED_UPLOAD_HOURS`` after it arrived is removed
    (file, thumbnail, record): its download is 404 and a message can no longer take it. A file a
    message took before that stays, with its thumbnail."""
    swept_stack: Stack = stack_factory(
        {"NATTER_CHAT_UNCLAIMED_UPLOAD_HOURS": "0.0005", "NATTER_CHAT_UPLOAD_SWEEP_INTERVAL_SECONDS": "0.5"}
    )  # 1.8 s
    room = unique_name("sweep")
    async with httpx.AsyncClient(base_url=swept_stack.base_url, timeout=30) as http:
        alice = await register(http)
        ws = await connect(swept_stack.ws_url, alice.access_token)
        await join(ws, room)
        kept = (await upload(http, alice, room, png(40, 30), "kept.png")).json()["attachment_id"]
        sent = await ws.request({"type": "chat_message", "room": room, "message": "a", "attachments": [kept]})
        assert sent["type"] == "ack", sent
        left = (await upload(http, alice, room, png(40, 30), "left.png")).json()["attachment_id"]
        assert (await http.get(f"/api/attachments/{left}", headers=bearer(alice))).status_code == 200
        async with asyncio.timeout(20):
            while (await http.get(f"/api/attachments/{left}", headers=bearer(alice))).status_code != 404:  # noqa: ASYNC110 - polling HTTP
                await asyncio.sleep(0.25)
        late = await ws.request({"type": "chat_message", "room": room, "message": "b", "attachments": [left]})
        assert late["type"] == "error" and late["code"] == "validation_error", late
        assert (await http.get(f"/api/attachments/{kept}", headers=bearer(alice))).status_code == 200
        thumb = await http.get(f"/api/attachments/{kept}?thumb=1", headers=bearer(alice))
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        await ws.close()
    operator = await nats.connect(swept_stack.nats.url)
    try:
        store = await operator.jetstream().object_store(subjects.OBJ_ATTACHMENTS)
        names = {info.name for info in await store.list(ignore_deletes=True)}
        assert {kept, f"{kept}.thumb"} <= names and not {left, f"{left}.thumb"} & names
        kv = await operator.jetstream().key_value(subjects.KV_ATTACHMENTS)
        assert set(await kv.keys()) == {kept}
    finally:
        await operator.close()


def test_provisioning_warns_that_an_unbounded_attachment_store_can_take_the_room_logs_storage(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """``NATTER_CHAT_ATTACHMENTS_MAX_BYTES`` unset (0, the session stack's setting) leaves the
    files bounded only by JetStream's own storage, which the room logs share: provisioning says
    so (docs/security.md). Provisioning again with the same settings changes nothing."""
    with caplog.at_level(logging.WARNING, logger="shared.provisioning"):
        nats_server.provision()
    warnings = [r.getMessage() for r in caplog.records if r.name == "shared.provisioning"]
    assert any("NATTER_CHAT_ATTACHMENTS_MAX_BYTES" in message for message in warnings), warnings


async def test_a_full_attachment_store_refuses_uploads_and_nothing_else(stack_factory: Any) -> None:
    """With ``NATTER_CHAT_ATTACHMENTS_MAX_BYTES`` the Object Store holds at most that much: an
    upload past it is 507 ``insufficient_storage``, leaves no chunks behind, and files already
    stored, messages and other uploads that fit are untouched."""
    capped: Stack = stack_factory({"NATTER_CHAT_ATTACHMENTS_MAX_BYTES": str(3 * 1024 * 1024)})
    room = unique_name("full")
    first = text_of(1024 * 1024, "first")
    async with httpx.AsyncClient(base_url=capped.base_url, timeout=30) as http:
        alice = await register(http)
        ws = await connect(capped.ws_url, alice.access_token)
        await join(ws, room)
        stored = await upload(http, alice, room, first)
        assert stored.status_code == 201, stored.text
        refused = await upload(http, alice, room, text_of(2560 * 1024, "second"))
        assert refused.status_code == 507, refused.text
        assert refused.json()["code"] == "insufficient_storage"
        fits = await upload(http, alice, room, text_of(64 * 1024, "third"))
        assert fits.status_code == 201, fits.text
        again = await http.get(f"/api/attachments/{stored.json()['attachment_id']}", headers=bearer(alice))
        assert again.status_code == 200 and again.content == first
        sent = await ws.request({"type": "chat_message", "room": room, "message": "still talking"})
        assert sent["type"] == "ack", sent
        await ws.close()
    operator = await nats.connect(capped.nats.url)
    try:
        js = operator.jetstream()
        info = await js.stream_info(subjects.OBJ_ATTACHMENTS_STREAM)
        assert info.config.max_bytes == 3 * 1024 * 1024
        assert info.state.bytes < (1024 + 64 + 64) * 1024  # the two files and their metadata only
        store = await js.object_store(subjects.OBJ_ATTACHMENTS)
        assert len(await store.list(ignore_deletes=True)) == 2
        capped.nats.provision({})  # provisioning again without the setting lifts the limit
        assert (await js.stream_info(subjects.OBJ_ATTACHMENTS_STREAM)).config.max_bytes == -1
    finally:
        await operator.close()
