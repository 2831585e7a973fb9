"""The gateway node: everything one gateway process shares between its sockets and routes.

Holds the NATS connection, the hub, the bus, the token verifier, revocations, metrics and the
presence heartbeat. Built in the FastAPI lifespan (:func:`gateway.app.lifespan`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.kv import KeyValue
from pydantic import ValidationError

from gateway.bus import Bus
from gateway.config import Settings
from gateway.edge import PendingSockets
from gateway.hub import Hub
from gateway.metrics import Metrics
from gateway.ratelimit import KeyedBuckets
from gateway.revocations import Revocations
from gateway.tokens import TokenVerifier
from shared import __version__, fastpaths, subjects
from shared.errors import CloseCode, ProtocolError
from shared.internal import AccessChange
from shared.nats_client import connect, request, request_msg
from shared.streams import open_bucket

if TYPE_CHECKING:
    from gateway.connection import Connection

logger = logging.getLogger(__name__)


class Node:
    """Shared state of one gateway process.

    Use :meth:`start` / :meth:`stop` (the app lifespan does).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gateway_id = settings.gateway_id
        self.version = __version__
        self.started = time.monotonic()
        self.metrics = Metrics()
        self.hub = Hub()
        self.revocations = Revocations()
        self.connections: set[Connection] = set()
        self.metrics.track_queues(lambda: [len(conn.queue) for conn in self.connections])
        #: sockets that authenticated (max_connections counts these).
        self.authenticated_count = 0
        #: sockets not authenticated yet, per address and in all (gateway.edge).
        self.pending = PendingSockets(
            per_address=settings.max_pending_per_address, total=settings.max_pending
        )
        #: attachment uploads per user (gateway.attachments): a member cannot fill the bucket.
        self.upload_buckets = KeyedBuckets(settings.attachment_upload_rate, settings.attachment_upload_burst)
        self.nc: Client | None = None
        #: the attachments' Object Store handle (gateway.attachments opens it on first use).
        self.attachment_store: Any = None
        self.bus: Bus | None = None
        self.verifier: TokenVerifier | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._gateways_kv: KeyValue | None = None

    async def start(self) -> None:
        """Connect to NATS, subscribe ``deliver.all``, start heartbeat and revocation watch."""
        fastpaths.log_active(gateway=True)
        self.nc = await connect(
            self.settings.nats_servers, name=f"gateway-{self.gateway_id}", login=self.settings.nats_login
        )
        self.bus = Bus(
            self.nc,
            self.hub,
            self.metrics,
            request_timeout=self.settings.request_timeout,
            gap_wait=self.settings.gap_wait,
            user_linger=self.settings.user_linger,
            on_removed=self.on_room_access,
        )
        await self.bus.start()
        self.verifier = TokenVerifier(
            self.nc,
            issuer=self.settings.jwt_issuer,
            audience=self.settings.jwt_audience,
            revocations=self.revocations,
            request_timeout=self.settings.request_timeout,
        )
        self._tasks.append(asyncio.create_task(self._keep(self._heartbeat, "heartbeat")))
        self._tasks.append(asyncio.create_task(self._keep(self._watch_revocations, "revocations")))
        self._tasks.append(asyncio.create_task(self._keep(self._watch_room_access, "room access")))
        self._tasks.append(
            asyncio.create_task(self._keep(self._watch_token_revocations, "token revocations"))
        )
        self._tasks.append(asyncio.create_task(self._keep(self._prefetch_keys, "jwks")))
        logger.info("gateway=%s started nats=%s", self.gateway_id, self.settings.nats_url)

    async def stop(self) -> None:
        """Close remaining sockets 1012, send presence leaves, drop the heartbeat, drain NATS."""
        for conn in list(self.connections):
            await conn.shutdown(CloseCode.SERVICE_RESTART, "service restart")
        if self._background:
            await asyncio.wait(set(self._background), timeout=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.bus is not None:
            await self.bus.stop()
        if self._gateways_kv is not None:
            try:
                await asyncio.wait_for(self._gateways_kv.delete(self.gateway_id), timeout=2)
            except Exception:
                logger.warning("gateway=%s could not remove heartbeat", self.gateway_id)
        if self.nc is not None:
            try:
                await asyncio.wait_for(self.nc.drain(), timeout=5)
            except Exception:
                await self.nc.close()
        logger.info("gateway=%s stopped", self.gateway_id)

    # --- helpers for connections and routes ----------------------------------------------
    @property
    def nats_connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in a task tracked until shutdown (teardown work, closes)."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def request(self, subject: str, body: bytes) -> bytes:
        """A NATS request to a service, timed into ``natter_gateway_nats_request_seconds``.

        Raises:
            ProtocolError: the service's error, or ``unavailable``.
        """
        assert self.nc is not None
        started = time.perf_counter()
        try:
            return await request(self.nc, subject, body, timeout=self.settings.request_timeout)
        finally:
            self.metrics.nats_latency.labels(subject).observe(time.perf_counter() - started)

    async def request_msg(self, subject: str, body: bytes) -> Msg:
        """:meth:`request`, returning the whole reply (body and headers)."""
        assert self.nc is not None
        started = time.perf_counter()
        try:
            return await request_msg(self.nc, subject, body, timeout=self.settings.request_timeout)
        finally:
            self.metrics.nats_latency.labels(subject).observe(time.perf_counter() - started)

    async def request_json(self, subject: str, body: dict[str, Any]) -> Any:
        """:meth:`request` with JSON in and out."""
        reply = await self.request(subject, json.dumps(body, separators=(",", ":")).encode())
        return json.loads(reply) if reply else None

    def on_revoke(self, user_id: str, session_id: str | None) -> None:
        """Close the user's sockets (all, or those of ``session_id``) 1008 "session revoked"."""
        for sub in self.hub.user_sockets(user_id):
            conn: Connection = sub  # type: ignore[assignment]
            if session_id is None or conn.session_id == session_id:
                conn.close(CloseCode.POLICY_VIOLATION, "session revoked")

    def on_room_access(self, room: str, user_id: str, reason: str, rev: int) -> None:
        """``user_id`` lost the right to read ``room`` at registry revision ``rev``: every local
        socket of the user leaves it with a ``removed`` frame (:meth:`Connection.revoke_room`).
        Called from the ``ROOM_ACCESS`` watch and from chat's ``removed`` frame on the room's
        delivery subject, whichever comes first (the other is then a no-op)."""
        for sub in self.hub.user_sockets(user_id):
            conn: Connection = sub  # type: ignore[assignment]
            conn.revoke_room(room, reason, rev)

    # --- background loops -----------------------------------------------------------------
    async def _keep(self, loop: Any, name: str) -> None:
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("gateway=%s %s loop failed: %r; retrying", self.gateway_id, name, error)
                await asyncio.sleep(1.0)

    async def _heartbeat(self) -> None:
        assert self.nc is not None
        js = self.nc.jetstream(timeout=self.settings.request_timeout)
        self._gateways_kv = await open_bucket(js, subjects.KV_GATEWAYS)
        while True:
            body = {"gateway_id": self.gateway_id, "connections": len(self.connections), "ts": time.time()}
            await self._gateways_kv.put(self.gateway_id, json.dumps(body).encode())
            await asyncio.sleep(self.settings.heartbeat_interval)

    async def _watch_revocations(self) -> None:
        assert self.nc is not None
        js = self.nc.jetstream(timeout=self.settings.request_timeout)
        kv = await open_bucket(js, subjects.KV_REVOCATIONS)
        await self.revocations.watch(kv, self.on_revoke)

    async def _watch_token_revocations(self) -> None:
        assert self.nc is not None
        js = self.nc.jetstream(timeout=self.settings.request_timeout)
        kv = await open_bucket(js, subjects.KV_TOKEN_REVOCATIONS)
        await self.revocations.watch(kv, self.on_revoke)

    async def _watch_room_access(self) -> None:
        """Follow ``ROOM_ACCESS`` from now on (an ordered push consumer, deliver policy *new*:
        changes from before this gateway started concern no socket of it) and act on each entry."""
        assert self.nc is not None
        js = self.nc.jetstream(timeout=self.settings.request_timeout)

        async def on_change(msg: Msg) -> None:
            try:
                change = AccessChange.model_validate_json(msg.data)
            except ValidationError:
                logger.warning("gateway=%s malformed access change skipped", self.gateway_id)
                return
            self.on_room_access(change.room, change.user_id, change.reason, change.rev)

        sub = await js.subscribe(
            subjects.ROOM_ACCESS_SUBJECTS,
            stream=subjects.ROOM_ACCESS_STREAM,
            cb=on_change,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
        )
        try:
            await asyncio.Event().wait()
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # connection closing: the consumer goes with it
                pass

    async def _prefetch_keys(self) -> None:
        assert self.verifier is not None
        while True:
            try:
                await self.verifier.refresh_keys()
                return
            except ProtocolError:
                await asyncio.sleep(1.0)
