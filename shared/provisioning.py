"""Creating natter's streams and buckets: the operator's job, never a service's (DESIGN.md rule
15 as natter applies it, :mod:`shared.nats_auth`).

A client allowed to create a stream can make it *source* any other stream of its account, so a
service with that right could copy the private signing keys. :func:`provision` therefore runs
with the operator's NATS identity: ``natter up`` runs it before it starts the services, compose
runs ``natter provision`` once before them, and an operator can run ``natter provision`` at any
time (it is idempotent: an existing stream with another configuration is updated in place, so a
new natter version brings its new streams with the next ``natter up``).

Services only open what they use (:func:`require_stream`, :func:`shared.streams.open_bucket`)
and wait, retrying, until it exists: they start in any order, before or after provisioning.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared import room_shards, subjects
from shared.config import NatsLogin
from shared.room_migration import migrate_v1_messages
from shared.streams import (
    BUCKET_TTLS,
    NotProvisioned,
    ensure_bucket,
    ensure_events_stream,
    ensure_notifications_stream,
    ensure_object_store,
    ensure_room_access_stream,
    ensure_stream,
    ensure_webhook_streams,
)

logger = logging.getLogger(__name__)

#: With no ``NATTER_CHAT_ATTACHMENTS_MAX_BYTES`` but the disk under the NATS store known
#: (``natter up``, compose's provision job), attachments may take this share of it and the room
#: logs keep the rest (docs/security.md).
ATTACHMENTS_DISK_SHARE: Final = 0.25
#: ... but never less than this many bytes (a nearly full disk still takes small files).
ATTACHMENTS_MIN_CAP: Final = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoreDisk:
    """The disk under the NATS store: its free bytes (``shutil.disk_usage``) and how many NATS
    nodes keep their store on it (``natter up --nats-cluster 3`` runs three on one disk)."""

    free_bytes: int
    nodes: int = 1

    @classmethod
    def of(cls, store_dir: Path, nodes: int = 1) -> StoreDisk:
        """The disk holding ``store_dir`` as it is now.

        Raises:
            OSError: ``store_dir`` cannot be looked at.
        """
        return cls(shutil.disk_usage(store_dir).free, nodes)


def attachments_cap(free_bytes: int, stored_bytes: int, *, nodes: int = 1) -> int:
    """Bytes the attachments' Object Store may hold when the operator set no cap.

    Args:
        free_bytes: free bytes of the disk under the NATS store(s).
        stored_bytes: what the attachments hold on that disk now, every node's copy counted (so
            a restart with a fuller store does not lower the cap below it).
        nodes: NATS nodes keeping a copy on that disk (the cap is per copy).

    Returns:
        :data:`ATTACHMENTS_DISK_SHARE` of ``free_bytes + stored_bytes`` per node, at least
        :data:`ATTACHMENTS_MIN_CAP`.
    """
    usable = int((free_bytes + stored_bytes) * ATTACHMENTS_DISK_SHARE) // max(1, nodes)
    return max(ATTACHMENTS_MIN_CAP, usable)


async def attachments_limit(js: JetStreamContext, configured: int, disk: StoreDisk | None) -> int:
    """The attachments' byte limit to provision: ``configured`` if set (> 0), else the
    :func:`attachments_cap` of ``disk`` when known, else 0 (no limit of its own, with a warning:
    uploads share JetStream's storage with the room logs, and a flood of them that fills it
    stops every room's writes, docs/security.md)."""
    if configured > 0:
        return configured
    if disk is None:
        logger.warning(
            "the attachments' Object Store has no size limit: uploads could fill the JetStream "
            "storage the room logs need; set NATTER_CHAT_ATTACHMENTS_MAX_BYTES to well under "
            "JetStream's max_file_store (a third, say)"
        )
        return 0
    try:
        stored = int((await js.stream_info(subjects.OBJ_ATTACHMENTS_STREAM)).state.bytes or 0)
    except NotFoundError:
        stored = 0
    cap = attachments_cap(disk.free_bytes, stored * disk.nodes, nodes=disk.nodes)
    logger.info(
        "attachments may hold %.1f GiB: a quarter of the disk under the NATS store "
        "(NATTER_CHAT_ATTACHMENTS_MAX_BYTES sets it)",
        cap / 2**30,
    )
    return cap


async def room_shard_count(js: JetStreamContext) -> int | None:
    """The shard count recorded on ``ROOMS_0`` (:mod:`shared.room_shards`), ``None`` before
    the room logs were provisioned."""
    try:
        info = await js.stream_info(room_shards.stream_name(0))
    except NotFoundError:
        return None
    value = (info.config.metadata or {}).get(room_shards.SHARDS_METADATA, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


async def provision(
    nc: Client,
    *,
    replicas: int,
    retention_days: float,
    room_shards_wanted: int = 4,
    attachments_max_bytes: int = 0,
    disk: StoreDisk | None = None,
) -> list[str]:
    """Create or update every stream and KV bucket natter uses, then move a v1
    ``CHAT_MESSAGES`` stream's messages into the room logs (:mod:`shared.room_migration`).

    Args:
        nc: a connection with the operator's permissions.
        replicas: replicas of each stream and bucket (1, or 3 on a NATS cluster).
        retention_days: room log max age (``NATTER_CHAT_RETENTION_DAYS``; 0 = forever).
        room_shards_wanted: shard streams for a new deployment (``NATTER_CHAT_ROOM_SHARDS``);
            an existing deployment keeps the count it was provisioned with (changing it moves
            rooms between streams, docs/scaling.md), and a different wish is logged.
        attachments_max_bytes: bytes the attachments' Object Store may hold
            (``NATTER_CHAT_ATTACHMENTS_MAX_BYTES``; 0: :func:`attachments_limit` decides),
            applied to an existing bucket too.
        disk: the disk under the NATS store, when the caller can see it.

    Returns:
        The names of the streams (buckets as ``KV_<bucket>``) that now exist.
    """
    js = nc.jetstream(timeout=10)
    shards = await room_shard_count(js)
    if shards is None:
        shards = room_shards_wanted
    elif shards != room_shards_wanted:
        logger.warning(
            "room logs stay on %d shards (NATTER_CHAT_ROOM_SHARDS=%d asks for a migration)",
            shards,
            room_shards_wanted,
        )
    names = []
    for shard in range(shards):
        await ensure_stream(
            js,
            room_shards.stream_config(shard, shards=shards, replicas=replicas, max_age_days=retention_days),
        )
        names.append(room_shards.stream_name(shard))
    await ensure_notifications_stream(js, replicas=replicas)
    await ensure_events_stream(js, replicas=replicas)
    await ensure_room_access_stream(js, replicas=replicas)
    await ensure_webhook_streams(js, replicas=replicas)
    await ensure_object_store(
        js,
        subjects.OBJ_ATTACHMENTS,
        replicas=replicas,
        max_bytes=await attachments_limit(js, attachments_max_bytes, disk),
    )
    names += [
        subjects.NOTIFICATIONS_STREAM,
        subjects.EVENTS_STREAM,
        subjects.ROOM_ACCESS_STREAM,
        subjects.WEBHOOKS_STREAM,
        subjects.WEBHOOK_LOG_STREAM,
        subjects.OBJ_ATTACHMENTS_STREAM,
    ]
    for bucket in BUCKET_TTLS:
        await ensure_bucket(js, bucket, replicas=replicas)
        names.append(f"KV_{bucket}")
    if replicas > 1:
        await spread_shard_leaders(nc, js, shards)
    migrated = await migrate_v1_messages(nc, js, shards=shards)
    if migrated:
        logger.info("moved %d messages from %s into the room logs", migrated, subjects.MESSAGES_STREAM)
    logger.info("provisioned %d streams and buckets (replicas=%d)", len(names), replicas)
    return names


async def spread_shard_leaders(
    nc: Client, js: JetStreamContext, shards: int, *, timeout: float = 10.0
) -> dict[str, str]:
    """On a cluster, give the room log shards different leaders: shard ``k`` is led by the
    ``k mod n``-th of the stream's ``n`` peers in name order (DESIGN.md rule 17: each shard's
    writes go through its own leader, so storage throughput grows with shards and nodes).

    JetStream elects a leader per stream wherever its election happens to land, often the
    same node for streams created together; a stepdown with a preferred peer
    (``$JS.API.STREAM.LEADER.STEPDOWN.<stream>``, placement ``preferred``, nats-server 2.11+)
    moves it. Already in place: nothing is asked. Best effort: a refused or slow move is
    logged and provisioning goes on (the stream works under any leader).

    Returns:
        stream name -> its leader after the moves (as far as seen within ``timeout`` seconds).
    """
    leaders: dict[str, str] = {}
    for shard in range(shards):
        name = room_shards.stream_name(shard)
        info = await js.stream_info(name)
        cluster = info.cluster
        if cluster is None or not cluster.leader:
            continue
        peers = sorted({cluster.leader, *(r.name for r in cluster.replicas or [] if r.name)})
        wanted = peers[shard % len(peers)]
        leaders[name] = cluster.leader
        if cluster.leader == wanted:
            continue
        request = json.dumps({"placement": {"preferred": wanted}}).encode()
        try:
            reply = await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{name}", request, timeout=timeout)
            answer = json.loads(reply.data or b"{}")
        except (nats.errors.Error, ValueError) as error:
            logger.warning("stream %s: leader move to %s not confirmed: %r", name, wanted, error)
            continue
        if answer.get("error"):
            logger.warning("stream %s: leader move to %s refused: %s", name, wanted, answer["error"])
            continue
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            current = (await js.stream_info(name)).cluster
            if current is not None and current.leader:
                leaders[name] = current.leader
                if current.leader == wanted:
                    break
            await asyncio.sleep(0.1)
        logger.info("stream %s led by %s", name, leaders[name])
    return leaders


async def provision_servers(
    servers: list[str],
    *,
    login: NatsLogin,
    replicas: int,
    retention_days: float,
    room_shards_wanted: int = 4,
    attachments_max_bytes: int = 0,
    disk: StoreDisk | None = None,
    timeout: float = 60.0,
) -> list[str]:
    """Connect as ``login`` (the operator), :func:`provision`, disconnect; retries while
    JetStream is not ready (a cluster electing its meta leader) for up to ``timeout`` seconds.

    Raises:
        TimeoutError: not done within ``timeout`` seconds (the last error is chained).
        nats.errors.Error: the connection itself is refused (e.g. wrong credentials).
    """
    options: dict[str, object] = {"inbox_prefix": login.inbox_prefix}
    if login.user and login.password is not None:
        options.update(user=login.user, password=login.password)
    nc = await nats.connect(servers=servers, name="natter-provision", connect_timeout=5, **options)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                return await provision(
                    nc,
                    replicas=replicas,
                    retention_days=retention_days,
                    room_shards_wanted=room_shards_wanted,
                    attachments_max_bytes=attachments_max_bytes,
                    disk=disk,
                )
            except (nats.errors.Error, TimeoutError) as error:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"provisioning did not finish in {timeout:.0f}s: {error!r}") from error
                logger.info("provisioning not done yet: %r; retrying", error)
                await asyncio.sleep(0.5)
    finally:
        await nc.close()


async def require_stream(js: JetStreamContext, name: str) -> None:
    """Check that stream ``name`` exists (a service's setup; it retries until it does).

    Raises:
        NotProvisioned: it does not exist yet.
    """
    try:
        await js.stream_info(name)
    except NotFoundError as error:
        raise NotProvisioned(f"stream {name} does not exist: run `natter provision`") from error
