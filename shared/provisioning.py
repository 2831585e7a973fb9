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
import logging

import nats
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared import subjects
from shared.config import NatsLogin
from shared.streams import (
    BUCKET_TTLS,
    NotProvisioned,
    ensure_bucket,
    ensure_events_stream,
    ensure_messages_stream,
    ensure_notifications_stream,
    ensure_room_access_stream,
)

logger = logging.getLogger(__name__)


async def provision(js: JetStreamContext, *, replicas: int, retention_days: float) -> list[str]:
    """Create or update every stream and KV bucket natter uses.

    Args:
        js: a JetStream context of a client with the operator's permissions.
        replicas: replicas of each stream and bucket (1, or 3 on a NATS cluster).
        retention_days: ``CHAT_MESSAGES`` max age (``NATTER_CHAT_RETENTION_DAYS``; 0 = forever).

    Returns:
        The names of the streams (buckets as ``KV_<bucket>``) that now exist.
    """
    await ensure_messages_stream(js, replicas=replicas, max_age_days=retention_days)
    await ensure_notifications_stream(js, replicas=replicas)
    await ensure_events_stream(js, replicas=replicas)
    await ensure_room_access_stream(js, replicas=replicas)
    names = [
        subjects.MESSAGES_STREAM,
        subjects.NOTIFICATIONS_STREAM,
        subjects.EVENTS_STREAM,
        subjects.ROOM_ACCESS_STREAM,
    ]
    for bucket in BUCKET_TTLS:
        await ensure_bucket(js, bucket, replicas=replicas)
        names.append(f"KV_{bucket}")
    logger.info("provisioned %d streams and buckets (replicas=%d)", len(names), replicas)
    return names


async def provision_servers(
    servers: list[str],
    *,
    login: NatsLogin,
    replicas: int,
    retention_days: float,
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
                    nc.jetstream(timeout=10), replicas=replicas, retention_days=retention_days
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
