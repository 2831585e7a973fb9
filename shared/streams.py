"""JetStream streams and KV buckets, created idempotently by whoever starts first.

Provisioning (:mod:`shared.provisioning`, the operator's identity) calls the ``ensure_*``
functions, any number of times: an existing stream with another config is updated in place.
Services only open what exists (:func:`open_bucket`).
Storage is always file; ``replicas`` is 1 on a single node and 3 on a cluster (DESIGN.md rule 11).
"""

from __future__ import annotations

import json
import logging
from typing import Final

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, ObjectStoreConfig, PubAck, StorageType, StreamConfig
from nats.js.errors import (
    APIError,
    BadRequestError,
    BucketNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from shared import subjects
from shared.request_mux import mux_for

logger = logging.getLogger(__name__)

DAY: Final = 86_400.0
#: Idempotency window for ``client_msg_id`` (PROTOCOL.md section 4: 10 minutes), in seconds.
DEDUP_WINDOW: Final = 600.0
#: Notifications are kept per user: the latest 500, for 30 days (PROTOCOL.md section 5).
NOTIFICATIONS_PER_USER: Final = 500
NOTIFICATIONS_MAX_AGE: Final = 30 * DAY

#: KV buckets and their TTL in seconds (None: entries live until deleted).
BUCKET_TTLS: Final[dict[str, float | None]] = {
    subjects.KV_USERS: None,
    subjects.KV_SESSIONS: 30 * DAY,
    subjects.KV_REFRESH: 30 * DAY,
    subjects.KV_AUTH_KEYS: None,
    subjects.KV_LOGIN_FAILURES: 900.0,
    subjects.KV_LOGIN_KNOWN: 30 * DAY,
    subjects.KV_SERVICE_TOKENS: None,
    subjects.KV_TOKEN_REVOCATIONS: None,
    subjects.KV_REVOCATIONS: DAY,
    subjects.KV_ROOMS: None,
    subjects.KV_PRESENCE: None,
    subjects.KV_GATEWAYS: 30.0,
    subjects.KV_NOTIFY_READ: 30 * DAY,
    subjects.KV_MEMBERSHIPS: None,
    subjects.KV_LEASES: 10.0,
    subjects.KV_WEBHOOKS: None,
    subjects.KV_ATTACHMENTS: None,
}


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create ``config.name`` or update it to ``config``; safe to call concurrently."""
    try:
        await js.add_stream(config)
    except BadRequestError as error:
        # 10058: stream name already in use with a different configuration.
        if error.err_code != 10058:
            raise
        await js.update_stream(config)
        logger.info("stream=%s updated", config.name)


async def ensure_notifications_stream(js: JetStreamContext, *, replicas: int) -> None:
    """``NOTIFICATIONS`` on ``notif.<user_id>``: 500 per user, 30 days, de-duplicated."""
    await ensure_stream(
        js,
        StreamConfig(
            name=subjects.NOTIFICATIONS_STREAM,
            subjects=[subjects.NOTIFICATIONS_SUBJECTS],
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=DEDUP_WINDOW,
            max_age=NOTIFICATIONS_MAX_AGE,
            max_msgs_per_subject=NOTIFICATIONS_PER_USER,
            allow_direct=True,
        ),
    )


#: Access changes are acted on within seconds; a day is for operators reading what happened.
ROOM_ACCESS_MAX_AGE: Final = DAY


async def ensure_room_access_stream(js: JetStreamContext, *, replicas: int) -> None:
    """``ROOM_ACCESS`` on ``access.<room>``: one entry per removal (the
    :class:`~shared.internal.AccessChange` body), kept a day, watched by every gateway."""
    await ensure_stream(
        js,
        StreamConfig(
            name=subjects.ROOM_ACCESS_STREAM,
            subjects=[subjects.ROOM_ACCESS_SUBJECTS],
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=ROOM_ACCESS_MAX_AGE,
            discard=DiscardPolicy.OLD,
        ),
    )


async def ensure_webhook_streams(js: JetStreamContext, *, replicas: int) -> None:
    """``WEBHOOKS`` on ``hook.<id>``: delivery jobs (kept 25 h, past the 24 h of retries;
    de-duplicated per webhook and event) and ``WEBHOOK_LOG`` on ``hooklog.<id>``: the latest 100
    attempts per webhook, direct gets allowed (``GET /api/webhooks/{id}/deliveries``)."""
    await ensure_stream(
        js,
        StreamConfig(
            name=subjects.WEBHOOKS_STREAM,
            subjects=[subjects.WEBHOOKS_SUBJECTS],
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=DEDUP_WINDOW,
            max_age=25 * 3600.0,
            discard=DiscardPolicy.OLD,
        ),
    )
    await ensure_stream(
        js,
        StreamConfig(
            name=subjects.WEBHOOK_LOG_STREAM,
            subjects=[subjects.WEBHOOK_LOG_SUBJECTS],
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_msgs_per_subject=100,
            max_age=7 * DAY,
            discard=DiscardPolicy.OLD,
            allow_direct=True,
        ),
    )


async def ensure_events_stream(js: JetStreamContext, *, replicas: int) -> None:
    """``EVENTS`` on ``events.>``: domain events and the event feed (:mod:`shared.events`) for
    durable consumers, kept 7 days, direct gets allowed."""
    await ensure_stream(
        js,
        StreamConfig(
            name=subjects.EVENTS_STREAM,
            subjects=[subjects.EVENTS_ALL],
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=DEDUP_WINDOW,
            max_age=7 * DAY,
            discard=DiscardPolicy.OLD,
            # backends read single events by sequence (the feed's ids point at them)
            allow_direct=True,
        ),
    )


class NotProvisioned(Exception):
    """A stream or bucket a service needs does not exist yet (run ``natter provision``)."""


async def open_bucket(js: JetStreamContext, bucket: str) -> KeyValue:
    """Open KV ``bucket``, which provisioning created (:mod:`shared.provisioning`).

    Raises:
        NotProvisioned: it does not exist yet (callers retry).
    """
    try:
        return await js.key_value(bucket)
    except (NotFoundError, BadRequestError) as error:
        raise NotProvisioned(f"bucket {bucket} does not exist: run `natter provision`") from error


async def ensure_bucket(js: JetStreamContext, bucket: str, *, replicas: int) -> KeyValue:
    """Open KV ``bucket`` (one of :data:`BUCKET_TTLS`), creating it if needed (operator only:
    :mod:`shared.provisioning`)."""
    try:
        return await js.key_value(bucket)
    except (NotFoundError, BadRequestError):
        pass
    ttl = BUCKET_TTLS[bucket]
    try:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                history=1,
                ttl=ttl,
                storage=StorageType.FILE,
                replicas=replicas,
                direct=True,
            )
        )
    except BadRequestError:
        # Another process created it first with the same name.
        return await js.key_value(bucket)


async def ensure_object_store(
    js: JetStreamContext, bucket: str, *, replicas: int, max_bytes: int = 0
) -> None:
    """Create Object Store ``bucket`` (file storage, ``replicas`` like the room logs, at most
    ``max_bytes`` in all, 0 for no limit of its own) or set an existing one's limit (operator only:
    :mod:`shared.provisioning`). nats-py makes the stream discard *new* writes when full, so a
    full store refuses uploads and never drops stored files."""
    limit = max_bytes if max_bytes > 0 else -1
    try:
        await js.object_store(bucket)
    except (NotFoundError, BadRequestError, BucketNotFoundError):
        try:
            await js.create_object_store(
                bucket,
                config=ObjectStoreConfig(
                    bucket=bucket, storage=StorageType.FILE, replicas=replicas, max_bytes=max_bytes
                ),
            )
            return
        except BadRequestError:  # created meanwhile
            pass
    stream = f"OBJ_{bucket}"
    config = (await js.stream_info(stream)).config
    if config.max_bytes != limit:
        config.max_bytes = limit
        await js.update_stream(config)


#: JetStream "wrong last sequence" error codes: 10071 on a single server, 10164 on a clustered
#: stream (an expected-last-sequence header that no longer holds).
WRONG_LAST_SEQUENCE: Final = frozenset({10071, 10164})


async def kv_update(nc: Client, bucket: str, key: str, value: bytes, *, last: int, timeout: float) -> int:
    """``KeyValue.update`` over the connection's request mux: store ``value`` under ``key`` only
    if its current revision is ``last`` (NATS docs, "Key/Value Store": optimistic concurrency);
    returns the new revision. nats-py's own ``update`` makes a request with a fresh inbox and a
    ``wait_for`` each time, which on a per-message path costs a chat replica several percent.

    Raises:
        nats.js.errors.KeyWrongLastSequenceError: the revision is not ``last`` any more.
        nats.js.errors.APIError, nats.errors.Error: as :func:`publish_acked`.
    """
    try:
        ack = await publish_acked(
            nc,
            f"$KV.{bucket}.{key}",
            value,
            timeout=timeout,
            headers={"Nats-Expected-Last-Subject-Sequence": str(last)},
        )
    except APIError as error:
        if error.err_code in WRONG_LAST_SEQUENCE:
            raise KeyWrongLastSequenceError(description=error.description) from None
        raise
    return int(ack.seq)


async def publish_acked(
    nc: Client,
    subject: str,
    payload: bytes,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> PubAck:
    """Publish to a stream subject and wait for its PubAck, over the connection's
    :class:`~shared.request_mux.RequestMux` (the errors of ``JetStreamContext.publish``).

    Raises:
        nats.js.errors.NoStreamResponseError: no stream captures ``subject`` (no responders).
        nats.js.errors.APIError: the stream refused the message (e.g. ``err_code`` 10071, a
            wrong expected last sequence; ``ServiceUnavailableError`` for code 503).
        nats.errors.TimeoutError: no PubAck within ``timeout`` seconds (outcome unknown).
        nats.errors.Error: the connection is closed or draining.
    """
    try:
        msg = await mux_for(nc).request(subject, payload, timeout=timeout, headers=headers)
    except NoRespondersError:
        raise NoStreamResponseError from None
    reply = json.loads(msg.data)
    if "error" in reply:
        raise APIError.from_error(reply["error"])  # from_error raises the matching subclass
    return PubAck(
        stream=reply["stream"],
        seq=reply["seq"],
        domain=reply.get("domain"),
        duplicate=reply.get("duplicate"),
    )
