"""chat_service's send-path room cache against a real nats-server: what it keeps, and how the
bucket watch makes it let go."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

from chat_service.directget import DirectReader
from chat_service.roomcache import RoomCache
from chat_service.rooms import RoomRegistry
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.streams import ensure_bucket
from tests.conftest import NatsServer
from tests.support import unique_name


@pytest.fixture
async def parts(nats_server: NatsServer) -> AsyncIterator[tuple[Client, RoomRegistry, RoomCache]]:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    kv = await ensure_bucket(js, subjects.KV_ROOMS, replicas=1)
    reader = DirectReader(nc)
    registry = RoomRegistry(reader, kv)
    cache = RoomCache(registry, js)
    await cache.start()
    yield nc, registry, cache
    await nc.close()


async def _watched(cache: RoomCache, *, updates: int, timeout: float = 3.0) -> None:
    """Wait until the cache's watch has delivered ``updates`` bucket writes."""
    async with asyncio.timeout(timeout):
        while cache._updates < updates:  # noqa: ASYNC110 - the watch callback has no event to await
            await asyncio.sleep(0.01)


async def _evicted(cache: RoomCache, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while len(cache):  # noqa: ASYNC110 - the watch callback has no event to await
            await asyncio.sleep(0.01)


async def test_public_room_is_cached_and_dropped_when_any_writer_changes_it(
    parts: tuple[Client, RoomRegistry, RoomCache],
) -> None:
    _, registry, cache = parts
    name = unique_name("pub")
    await registry.get_or_create_public(name)
    await _watched(cache, updates=1)  # the creation's own watch event, which would evict the entry
    first = await cache.require_access(name, "u1")
    assert first.name == name and len(cache) == 1
    assert await cache.require_access(name, "u2") is first  # served from the cache
    # another replica's write (any write to the key) reaches this cache through the watch
    assert await registry.raise_floor(name, 41)
    await _evicted(cache)
    again = await cache.require_access(name, "u1")
    assert again.seq_floor == 41


async def test_private_rooms_and_missing_rooms_are_never_cached(
    parts: tuple[Client, RoomRegistry, RoomCache],
) -> None:
    _, registry, cache = parts
    name = unique_name("priv")
    await registry.create(name, owner="owner-1", private=True)
    assert (await cache.require_access(name, "owner-1")).private
    with pytest.raises(ProtocolError) as refused:
        await cache.require_access(name, "stranger")
    assert refused.value.code is ErrorCode.FORBIDDEN
    with pytest.raises(ProtocolError) as missing:
        await cache.require_access(unique_name("none"), "u1")
    assert missing.value.code is ErrorCode.ROOM_NOT_FOUND
    assert len(cache) == 0
