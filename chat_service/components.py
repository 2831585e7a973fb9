"""Wiring of one chat replica: streams, buckets, and the parts the endpoints use.

:class:`Runtime` is created before the NATS connection exists (endpoints are registered on the
service first) and filled by :meth:`Runtime.setup`, the ServiceApp setup hook.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.client import Client
from nats.js import JetStreamContext

from chat_service.attachments import Attachments
from chat_service.config import Settings
from chat_service.directget import DirectReader
from chat_service.feed import FeedRelay
from chat_service.floors import FloorKeeper, floor_interval
from chat_service.janitor import Janitor
from chat_service.memberships import Memberships
from chat_service.presence import Presence
from chat_service.roomcache import RoomCache
from chat_service.roomlog.log import RoomLog
from chat_service.roomlog.purge import Purger
from chat_service.rooms import RoomRegistry
from chat_service.upload_sweep import UploadSweeper
from shared import room_shards, subjects
from shared.provisioning import require_stream, room_shard_count
from shared.streams import NotProvisioned, open_bucket


@dataclass(frozen=True, slots=True)
class Components:
    """What the handlers use, built once the NATS connection is up."""

    nc: Client
    js: JetStreamContext
    log: RoomLog
    purger: Purger
    rooms: RoomRegistry
    #: rooms for the send path (watched; see chat_service.roomcache).
    room_cache: RoomCache
    presence: Presence
    memberships: Memberships
    janitor: Janitor
    floors: FloorKeeper | None
    #: room events into the event feed (chat_service.feed)
    feed: FeedRelay
    #: attachment records (chat_service.attachments)
    attachments: Attachments
    #: removes uploads no message took (chat_service.upload_sweep)
    upload_sweep: UploadSweeper


async def build_components(nc: Client, settings: Settings) -> Components:
    """Open the provisioned streams and buckets (:mod:`shared.provisioning`; the setup is retried
    until they exist), create ``general``, and build the parts."""
    js = nc.jetstream()
    shards = await room_shard_count(js)
    if shards is None:
        raise NotProvisioned(f"stream {room_shards.stream_name(0)} does not exist: run `natter provision`")
    for stream in (subjects.EVENTS_STREAM, subjects.ROOM_ACCESS_STREAM):
        await require_stream(js, stream)
    rooms_kv = await open_bucket(js, subjects.KV_ROOMS)
    presence_kv = await open_bucket(js, subjects.KV_PRESENCE)
    gateways_kv = await open_bucket(js, subjects.KV_GATEWAYS)
    memberships_kv = await open_bucket(js, subjects.KV_MEMBERSHIPS)
    leases_kv = await open_bucket(js, subjects.KV_LEASES)
    attachments_kv = await open_bucket(js, subjects.KV_ATTACHMENTS)
    reader = DirectReader(nc)
    rooms = RoomRegistry(reader, rooms_kv)
    await rooms.ensure_general()
    room_cache = RoomCache(rooms, js)
    await room_cache.start()
    presence = Presence(nc, reader, presence_kv)
    log = RoomLog(
        nc,
        reader,
        shards=shards,
        publish_timeout=settings.publish_timeout_seconds,
        attempts=settings.send_attempts,
    )
    attachments = Attachments(nc, attachments_kv, rooms)
    janitor = Janitor(
        reader,
        presence,
        gateways_kv,
        interval=settings.janitor_interval_seconds,
        grace=settings.janitor_grace_seconds,
    )
    floors = None
    if settings.retention_days > 0:
        interval = settings.floor_interval_seconds or floor_interval(settings.retention_days)
        floors = FloorKeeper(rooms, log, interval=interval)
    return Components(
        nc=nc,
        js=js,
        log=log,
        purger=Purger(log, js, attachments, timeout=settings.publish_timeout_seconds),
        rooms=rooms,
        room_cache=room_cache,
        presence=presence,
        memberships=Memberships(reader, memberships_kv),
        janitor=janitor,
        floors=floors,
        feed=FeedRelay(nc, log, leases_kv, timeout=settings.publish_timeout_seconds),
        attachments=attachments,
        upload_sweep=UploadSweeper(
            attachments,
            reader,
            leases_kv,
            max_age=settings.unclaimed_upload_hours * 3600,
            interval=settings.upload_sweep_interval_seconds,
        ),
    )


class Runtime:
    """Settings plus the :class:`Components`, available once :meth:`setup` ran."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._parts: Components | None = None

    @property
    def parts(self) -> Components:
        """The components. Raises RuntimeError before :meth:`setup`."""
        if self._parts is None:
            raise RuntimeError("chat components used before setup")
        return self._parts

    async def setup(self, nc: Client) -> None:
        """ServiceApp setup hook: build the components on the live connection."""
        self._parts = await build_components(nc, self.settings)

    def payload_budget(self, slack: int = 4096) -> int:
        """Bytes a reply may use: the server's max payload minus ``slack`` for envelope/headers."""
        return max(self.parts.nc.max_payload - slack, 1024)

    async def run_janitor(self) -> None:
        """Background task: the presence janitor."""
        await self.parts.janitor.run()

    async def run_upload_sweep(self) -> None:
        """Background task: remove uploads no message took (chat_service.upload_sweep)."""
        await self.parts.upload_sweep.run()

    async def run_purges(self) -> None:
        """Background task: finish purges a dead replica left pending."""
        await self.parts.purger.run()

    def owned_streams(self) -> list[str]:
        """The streams and buckets whose sizes chat reports as metrics (after setup)."""
        shards = [room_shards.stream_name(k) for k in range(self.parts.log.shards)]
        buckets = [f"KV_{b}" for b in (subjects.KV_ROOMS, subjects.KV_PRESENCE, subjects.KV_MEMBERSHIPS)]
        return [*shards, *buckets, subjects.ROOM_ACCESS_STREAM]

    async def run_feed(self) -> None:
        """Background task: relay room events into the event feed (chat_service.feed)."""
        await self.parts.feed.run()

    async def run_floors(self) -> None:
        """Background task: seq floors (returns at once when retention is off)."""
        if self.parts.floors is not None:
            await self.parts.floors.run()
