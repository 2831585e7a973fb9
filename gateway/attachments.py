"""Attachments over HTTP (PROTOCOL.md section 11): upload into the Object Store bucket
``natter_attachments``, download for readers of the room. The gateway streams the bytes
(DESIGN.md rule 16); chat keeps the records and decides who may (``chat.attachments.*``).

Upload (``POST /api/rooms/{room}/attachments``, multipart, one field ``file``):

0. the caller's upload bucket (``NATTER_GATEWAY_ATTACHMENT_UPLOAD_RATE`` / ``_BURST``, per user
   per gateway) has a token, else 429 with ``Retry-After``: one member cannot fill the bucket
   with files no message claims;
1. chat checks that the user may send in the room (``register`` with ``dry_run``): 403 / 404;
2. the body is read as it arrives and refused 413 as soon as it passes the limit
   (:class:`gateway.edge.BodyLimit` ``streamed``), never buffered whole when too big; the file
   is spooled by Starlette (memory up to 1 MiB, then a temporary file) and read from there in
   pieces, with the blocking work (scans, Pillow) in a thread rather than on the event loop;
3. the content type comes from the bytes (``filetype``, signatures of the well-known formats;
   UTF-8 text without NUL bytes is ``text/plain``), never from the name or the client's header;
   a type outside ``NATTER_GATEWAY_ATTACHMENT_TYPES`` is 415;
4. images are opened with Pillow (decompression bombs refused, 415): width, height and a JPEG
   thumbnail at most 320 px wide (``<id>.thumb``);
5. the file is put in the Object Store and chat records it; the answer is 201 with
   ``{"attachment_id","name","size","content_type","width","height"}``.

Download (``GET /api/attachments/{id}``, ``?thumb=1`` for an image's thumbnail): chat says
whether the caller may read the file's room now (403) and whether it exists (404); the file
goes out with its content type, ``X-Content-Type-Options: nosniff``, ``Content-Disposition:
attachment`` for anything but images (``inline`` for images), ``Cache-Control: private``.
It is streamed chunk by chunk (:func:`object_chunks`): the gateway holds at most
:data:`CHUNKS_PER_READ` chunks of one download at a time and reads the next ones only when the
client has taken the last, so a slow reader or a large file costs no more memory than a small
one.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import io
import logging
import secrets
import unicodedata
import warnings
from collections.abc import AsyncIterator
from typing import IO, Annotated, Any, Final
from urllib.parse import quote

import filetype
import nats.errors
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from nats.aio.client import Client
from nats.js.errors import APIError, ObjectDeletedError, ObjectNotFoundError
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from gateway.http_api import RoomPath, UserClaims, json_bytes, node_of, token_role
from gateway.http_models import AttachmentInfo, errors
from gateway.ratelimit import retry_after_seconds
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.internal import AttachmentGetRequest, AttachmentRecord
from shared.stream_reader import StoredMsg, direct_batch

logger = logging.getLogger(__name__)
router = APIRouter()

#: Image types natter makes a thumbnail of (and serves inline).
IMAGE_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
#: Widest thumbnail, pixels (section 11).
THUMB_WIDTH: Final = 320
#: Pillow refuses images with more pixels than this (a decompression bomb: a small file that
#: decodes to gigabytes).
MAX_PIXELS: Final = 40_000_000
#: Bytes read at a time when a file is scanned (text check).
SCAN_BYTES: Final = 1024 * 1024
#: Bytes of multipart envelope allowed on top of the file.
ENVELOPE: Final = 64 * 1024
AttachmentIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
#: Object Store chunks (128 KiB each, nats-py's default) read per direct get while streaming a
#: download: at most this many of one download are in the gateway's memory.
CHUNKS_PER_READ: Final = 4
#: How an Object Store object's ``digest`` begins (then the URL-safe base64 of its SHA-256).
OBJ_DIGEST_PREFIX: Final = "SHA-256="


def upload_limit(path: str, max_bytes: int) -> int | None:
    """The streamed body limit of ``path`` when it is an upload (file + envelope), else None."""
    if path.startswith("/api/rooms/") and path.endswith("/attachments") and path.count("/") == 4:
        return max_bytes + ENVELOPE
    return None


def sniff(data: bytes) -> str | None:
    """The content type of ``data`` from its bytes (:func:`sniff_file`)."""
    return sniff_file(io.BytesIO(data))


def sniff_file(file: IO[bytes]) -> str | None:
    """The content type of a whole binary file from its bytes: a known signature in its first
    8 KiB (``filetype``), else ``text/plain`` for UTF-8 without NUL bytes, else None. Reads
    1 MiB at a time, so a large upload is never held whole; blocking (disk reads): run it in a
    thread from async code."""
    file.seek(0)
    kind = filetype.guess(file.read(8192))
    if kind is not None:
        return str(kind.mime)
    file.seek(0)
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        while piece := file.read(SCAN_BYTES):
            if b"\x00" in piece:
                return None
            decoder.decode(piece)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return None
    return "text/plain"


def clean_name(name: str | None) -> str:
    """A file name safe to store and show: the last path part, no control characters, at most
    255 characters; ``file`` when nothing is left."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    return base[:255] or "file"


def image_facts(source: bytes | IO[bytes]) -> tuple[int, int, bytes]:
    """``(width, height, JPEG thumbnail)`` of an image, given as bytes or a binary file (read
    from its start). Blocking (decoding): run it in a thread from async code.

    Raises:
        ProtocolError: ``validation_error`` (415 at the route) for an image Pillow cannot read or
            one over :data:`MAX_PIXELS`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            if isinstance(source, bytes):
                source = io.BytesIO(source)
            source.seek(0)
            with Image.open(source) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ProtocolError(ErrorCode.VALIDATION_ERROR, "image too large")
                image.thumbnail((THUMB_WIDTH, max(1, THUMB_WIDTH * height // max(1, width))))
                out = io.BytesIO()
                image.convert("RGB").save(out, "JPEG", quality=80)
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ):
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, "image unreadable or too large") from None
    return width, height, out.getvalue()


def content_disposition(kind: str, name: str) -> str:
    """``inline`` for images, else ``attachment``, with the name (RFC 6266, RFC 8187 for
    non-ASCII names)."""
    disposition = "inline" if kind in IMAGE_TYPES else "attachment"
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


async def _store(request: Request) -> Any:
    """The node's handle on the attachments bucket, opened once: opening it is a
    ``STREAM.INFO`` round trip that every upload and download would otherwise repeat."""
    node = node_of(request)
    if node.attachment_store is None:
        assert node.nc is not None
        node.attachment_store = await node.nc.jetstream().object_store(subjects.OBJ_ATTACHMENTS)
    return node.attachment_store


@router.post(
    "/api/rooms/{room}/attachments",
    tags=["attachments"],
    status_code=201,
    response_model=AttachmentInfo,
    responses=errors(400, 401, 403, 404, 413, 415, 429, 507),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "additionalProperties": False,  # one field: any other is 422
                    }
                }
            },
        }
    },
)
async def upload(room: RoomPath, claims: UserClaims, request: Request) -> Response:
    """Upload one file for a message of ``room`` (module docstring); 201 with its facts; 429
    with ``Retry-After`` past the caller's upload rate (``NATTER_GATEWAY_ATTACHMENT_UPLOAD_*``)."""
    subjects.check_room(room)
    node = node_of(request)
    settings = node.settings
    wait = node.upload_buckets.take(claims.user_id)
    if wait > 0:
        raise ProtocolError(ErrorCode.RATE_LIMITED, retry_after=retry_after_seconds(wait))
    probe = {
        "attachment_id": "0" * 32,
        "name": "probe",
        "size": 0,
        "content_type": "probe/probe",
        "room": room,
        "user_id": claims.user_id,
        "dry_run": True,
    }
    await node.request_json(subjects.CHAT_ATTACHMENTS_REGISTER, probe)
    try:
        form = await request.form(max_files=1, max_fields=0)
    except ProtocolError:  # the body passed its limit or its time (gateway.edge)
        raise
    except Exception as error:  # a malformed multipart body (Starlette's MultiPartException ...)
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, f"file: {error}") from None
    try:
        upload_file = form.get("file")
        if not isinstance(upload_file, UploadFile):
            raise ProtocolError(ErrorCode.VALIDATION_ERROR, "file: a multipart field named file is required")
        name = clean_name(upload_file.filename)
        # Starlette spooled the file (memory up to 1 MiB, then a temporary file): it is read from
        # there in pieces, never whole, and the blocking parts run in a thread, not on the loop
        # that serves every socket of this gateway.
        file = upload_file.file
        size = await run_in_threadpool(file.seek, 0, io.SEEK_END)
        if size > settings.attachment_max_bytes:
            raise ProtocolError(
                ErrorCode.PAYLOAD_TOO_LARGE, f"file larger than {settings.attachment_max_bytes} bytes"
            )
        kind = await run_in_threadpool(sniff_file, file)
        if kind is None or kind not in settings.attachment_types:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"content type {kind or 'unknown'} is not allowed"
            )
        width = height = None
        thumb = None
        if kind in IMAGE_TYPES:
            try:
                width, height, thumb = await run_in_threadpool(image_facts, file)
            except ProtocolError as refused:
                raise ProtocolError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, refused.message) from None
        attachment_id = secrets.token_hex(16)
        store = await _store(request)
        await run_in_threadpool(file.seek, 0)
        try:
            await store.put(attachment_id, file)  # nats-py reads it chunk by chunk
            if thumb is not None:
                await store.put(f"{attachment_id}.thumb", thumb)
        except APIError as error:  # nats-py has purged the chunks of the object it was writing
            await _delete_objects(store, attachment_id)
            if "maximum bytes" in (error.description or ""):  # err 10077, the bucket's max_bytes
                raise ProtocolError(ErrorCode.INSUFFICIENT_STORAGE) from None
            raise ProtocolError(ErrorCode.UNAVAILABLE) from error
    finally:
        await form.close()
    record = AttachmentRecord(
        attachment_id=attachment_id,
        name=name,
        size=size,
        content_type=kind,
        width=width,
        height=height,
        thumbnail=thumb is not None,
        room=room,
        user_id=claims.user_id,
    )
    try:
        reply = await node.request(subjects.CHAT_ATTACHMENTS_REGISTER, record.model_dump_json().encode())
    except ProtocolError:
        await _delete_objects(store, attachment_id)
        raise
    return json_bytes(reply, 201)


async def _delete_objects(store: Any, attachment_id: str) -> None:
    """Remove an upload's file and thumbnail, whichever exist (best effort: storage trouble is
    logged, the upload's answer is the error that brought us here)."""
    for object_name in (attachment_id, f"{attachment_id}.thumb"):
        try:
            await store.delete(object_name)
        except ObjectNotFoundError:
            pass
        except nats.errors.Error as error:
            logger.warning("attachment %s not removed: %r", object_name, error)


@router.get(
    "/api/attachments/{attachment_id}",
    tags=["attachments"],
    response_class=Response,
    responses={
        200: {
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The file, with the content type detected at upload (a thumbnail: image/jpeg)",
        },
        **errors(401, 403, 404),
    },
)
async def download(
    attachment_id: AttachmentIdPath,
    claims: UserClaims,
    request: Request,
    thumb: Annotated[bool, Query(description="An image's JPEG thumbnail (at most 320 px wide).")] = False,
) -> Response:
    """The file, for whoever may read its room now (module docstring)."""
    node = node_of(request)
    ask = AttachmentGetRequest(attachment_id=attachment_id, user_id=claims.actor_id, role=token_role(claims))
    record = await node.request_json(subjects.CHAT_ATTACHMENTS_GET, ask.model_dump())
    if thumb and not record.get("thumbnail"):
        raise ProtocolError(ErrorCode.NOT_FOUND, "This attachment has no thumbnail")
    store = await _store(request)
    try:
        info = await store.get_info(f"{attachment_id}.thumb" if thumb else attachment_id)
    except (ObjectNotFoundError, ObjectDeletedError):  # deleted with its message meanwhile
        raise ProtocolError(ErrorCode.NOT_FOUND, "Attachment not found") from None
    kind = "image/jpeg" if thumb else str(record["content_type"])
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": content_disposition(kind, str(record["name"])),
        "Cache-Control": "private, max-age=3600",
        # whatever the browser makes of the bytes, they cannot run script in natter's origin
        "Content-Security-Policy": "default-src 'none'; img-src 'self'; sandbox",
        "Content-Length": str(info.size or 0),
    }
    nc = node.nc
    assert nc is not None
    chunks = object_chunks(nc, info)
    # The first read happens before the status line, so storage that does not answer is a 503,
    # not a cut-off 200.
    first = await anext(chunks, b"")
    return StreamingResponse(_prepend(first, chunks), media_type=kind, headers=headers)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


async def object_chunks(nc: Client, info: Any, *, per_read: int = CHUNKS_PER_READ) -> AsyncIterator[bytes]:
    """The bytes of Object Store object ``info`` (an ``ObjectInfo`` of ``natter_attachments``),
    chunk by chunk in order, ``per_read`` chunks per direct get of its chunk subject
    ``$O.<bucket>.C.<nuid>`` (NATS docs, "Object Store": an object is its chunks on one subject
    plus a metadata message). Nothing is read ahead of the consumer of this iterator.

    The last chunk is held back until the whole object has matched ``info.size`` and
    ``info.digest`` (SHA-256), so a response carrying a short or altered object always ends
    short of its ``Content-Length``: a client can never take it for the complete file.

    Raises:
        ProtocolError: ``unavailable`` when the stream does not answer, or when the chunks end
            before ``info.size`` bytes or do not match ``info.digest``.
    """
    size = int(info.size or 0)
    if size == 0:
        return
    subject = f"$O.{subjects.OBJ_ATTACHMENTS}.C.{info.nuid}"
    digest = hashlib.sha256()
    held: bytes | None = None
    sent, next_seq = 0, 1
    while sent < size:
        found: list[StoredMsg] = await direct_batch(
            nc, subjects.OBJ_ATTACHMENTS_STREAM, subject=subject, start_seq=next_seq, batch=per_read
        )
        if not found:
            logger.error("attachment %s: chunks end after %d of %d bytes", info.name, sent, size)
            raise ProtocolError(ErrorCode.UNAVAILABLE, "attachment incomplete in storage")
        for chunk in found:
            digest.update(chunk.data)
            sent += len(chunk.data)
            if held is not None:
                yield held
            held = chunk.data
        next_seq = found[-1].stream_seq + 1
    expected = str(info.digest or "")
    for prefix in (OBJ_DIGEST_PREFIX, OBJ_DIGEST_PREFIX.upper()):
        expected = expected.removeprefix(prefix)
    if sent != size or base64.urlsafe_b64decode(expected + "=" * (-len(expected) % 4)) != digest.digest():
        logger.error("attachment %s: size or digest mismatch (%d bytes of %d)", info.name, sent, size)
        raise ProtocolError(ErrorCode.UNAVAILABLE, "attachment corrupt in storage")
    if held is not None:
        yield held
