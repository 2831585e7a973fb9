"""NATS side of delivery: subscribe per room / per user while local sockets need it, relay.

centrifuge ``node.go`` ``addSubscription``: subscribe to the broker on a room's first local
member and unsubscribe on its last. Here a room subscription is a shared task, so a second socket
joining while the first subscription is still being set up waits for it: nothing published after
a ``chat.join`` read can be missed. Frames are relayed as the bytes the producing service encoded
(decoded to ``str`` once per NATS message, never per recipient, never re-encoded).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from gateway.wire import Outbound
from shared import subjects
from shared.direct_subscription import subscribe_direct
from shared.errors import ErrorCode, ProtocolError
from shared.internal import HistoryRequest
from shared.nats_client import request
from shared.protocol import dumps

if TYPE_CHECKING:
    from gateway.hub import Hub
    from gateway.metrics import Metrics

logger = logging.getLogger(__name__)

#: Called with (room, user_id, reason, registry revision) when chat announces a removal.
OnRemoved = Callable[[str, str, str, int], None]


class Bus:
    """Owns the gateway's delivery subscriptions and fills ordering gaps from storage.

    Args:
        nc: connected NATS client.
        hub: the local registry to relay into.
        request_timeout: seconds for ``chat.history`` gap fills.
        gap_wait: seconds to wait for a late frame before reading the gap from storage.
        user_linger: seconds a user's ``deliver.user.<id>`` subscription outlives the user's last
            local socket, so that reconnects (page reloads, network blips, a failover storm)
            reuse it instead of paying a SUB and an UNSUB each; 0 unsubscribes at once.
        on_removed: called for chat's ``removed`` frames (``Natter-Kind: removed``) with
            ``(room, user_id, reason, registry revision)``; they are never relayed as they are.
    """

    def __init__(
        self,
        nc: Client,
        hub: Hub,
        metrics: Metrics,
        *,
        request_timeout: float,
        gap_wait: float,
        user_linger: float = 0.0,
        on_removed: OnRemoved | None = None,
    ) -> None:
        self.nc = nc
        self.hub = hub
        self.metrics = metrics
        self.request_timeout = request_timeout
        self.gap_wait = gap_wait
        self._rooms: dict[str, asyncio.Task[Subscription]] = {}
        self._users: dict[str, Subscription] = {}
        self.user_linger = user_linger
        self._lingering: dict[str, asyncio.TimerHandle] = {}
        self._all: Subscription | None = None
        self._gap_tasks: dict[str, asyncio.Task[None]] = {}
        self._on_removed = on_removed

    async def start(self) -> None:
        """Subscribe to ``deliver.all``."""
        self._all = await subscribe_direct(self.nc, subjects.DELIVER_ALL, self._on_all)

    async def stop(self) -> None:
        """Cancel gap fills and linger timers; subscriptions go with the connection's drain."""
        for task in self._gap_tasks.values():
            task.cancel()
        for handle in self._lingering.values():
            handle.cancel()
        self._lingering.clear()

    # --- rooms ----------------------------------------------------------------------------
    async def ensure_room(self, room: str) -> None:
        """Subscribe to ``deliver.room.<room>`` unless already (being) subscribed; wait for it.

        Raises:
            ProtocolError: ``unavailable`` if NATS does not accept the subscription.
        """
        task = self._rooms.get(room)
        if task is None:
            task = asyncio.ensure_future(self._subscribe_room(room))
            self._rooms[room] = task
        try:
            await asyncio.shield(task)
        except Exception as error:
            if self._rooms.get(room) is task:
                del self._rooms[room]
            raise ProtocolError(ErrorCode.UNAVAILABLE) from error

    async def _subscribe_room(self, room: str) -> Subscription:
        sub = await subscribe_direct(self.nc, subjects.deliver_room(room), self._on_room)
        await self.nc.flush(timeout=self.request_timeout)
        return sub

    def release_room(self, room: str) -> None:
        """Unsubscribe from a room that has no local socket left (non-blocking)."""
        if room in self.hub.rooms:
            return
        task = self._rooms.pop(room, None)
        gap = self._gap_tasks.pop(room, None)
        if gap is not None:
            gap.cancel()
        if task is not None:
            asyncio.ensure_future(_unsubscribe_when_done(task))

    def _on_room(self, msg: Msg) -> None:
        headers = msg.headers or {}
        room = headers.get(subjects.HDR_ROOM) or subjects.room_from_deliver_subject(msg.subject)
        kind = headers.get(subjects.HDR_KIND, "message")
        if kind == subjects.KIND_REMOVED:
            self._removed(room, headers, msg.data)
            return
        frame = Outbound(msg.data)
        seq_header = headers.get(subjects.HDR_SEQ)
        stored_ms = headers.get(subjects.HDR_STORED_MS)
        if stored_ms is not None:
            self.metrics.delivered_after(stored_ms)
        if seq_header is not None:
            relayed_frames = self.hub.deliver_message(room, int(seq_header), frame)
            if relayed_frames:
                state = self.hub.rooms.get(room)
                self.metrics.relayed("message", relayed_frames * (len(state.floors) if state else 0))
            if self.hub.gap(room) is not None and room not in self._gap_tasks:
                self._gap_tasks[room] = asyncio.ensure_future(self._fill_gap(room))
        else:
            count = self.hub.deliver_event(room, frame, skip_user=headers.get(subjects.HDR_USER))
            self.metrics.relayed(kind, count)

    def _removed(self, room: str, headers: dict[str, str], data: bytes) -> None:
        """chat's ``removed`` frame for one user: hand it to ``on_removed`` (never relayed as is:
        it concerns that user's sockets only)."""
        user_id = headers.get(subjects.HDR_USER)
        try:
            rev = int(headers.get(subjects.HDR_ROOM_REV, ""))
            reason = json.loads(data).get("reason", "removed")
        except (ValueError, AttributeError):
            logger.warning("room=%s malformed removed frame skipped", room)
            return
        if user_id and self._on_removed is not None:
            self._on_removed(room, user_id, str(reason), rev)

    async def _fill_gap(self, room: str) -> None:
        """Wait ``gap_wait`` for late frames, then read the missing seqs from storage."""
        try:
            await asyncio.sleep(self.gap_wait)
            for _ in range(10):
                gap = self.hub.gap(room)
                user_id = self.hub.member_user_id(room)
                if gap is None or user_id is None:
                    return
                after, count = gap
                body = HistoryRequest(room=room, user_id=user_id, after=after, limit=min(max(count, 1), 1000))
                try:
                    reply = await request(
                        self.nc,
                        subjects.CHAT_HISTORY,
                        body.model_dump_json(exclude_none=True).encode(),
                        timeout=self.request_timeout,
                    )
                except ProtocolError as error:
                    logger.warning("gap fill failed room=%s error=%s", room, error)
                    await asyncio.sleep(0.5)
                    continue
                page = json.loads(reply)
                self.metrics.gap_fills.inc()
                for data in page.get("messages", []):
                    # A replayed entry's frame type: its data's ``type`` (room events), else message.
                    kind = data.get("type") if isinstance(data.get("type"), str) else "message"
                    frame = Outbound(dumps({"type": kind, "room": room, "data": data}).encode())
                    self.hub.deliver_message(room, int(data["seq"]), frame)
        finally:
            self._gap_tasks.pop(room, None)

    # --- users ----------------------------------------------------------------------------
    async def subscribe_user(self, user_id: str) -> None:
        """Subscribe to ``deliver.user.<user_id>`` (idempotent; revives a lingering one)."""
        if user_id in self._users:
            handle = self._lingering.pop(user_id, None)
            if handle is not None:
                handle.cancel()
            return
        sub = await subscribe_direct(self.nc, subjects.deliver_user(user_id), self._on_user)
        if user_id in self._users:  # a concurrent call won
            await sub.unsubscribe()
            return
        self._users[user_id] = sub

    def release_user(self, user_id: str) -> None:
        """Unsubscribe from a user that has no local socket left, after ``user_linger`` seconds
        (non-blocking)."""
        if user_id in self.hub.users or user_id not in self._users or user_id in self._lingering:
            return
        if self.user_linger <= 0:
            self._drop_user(user_id)
            return
        loop = asyncio.get_running_loop()
        self._lingering[user_id] = loop.call_later(self.user_linger, self._drop_user, user_id)

    def _drop_user(self, user_id: str) -> None:
        self._lingering.pop(user_id, None)
        if user_id in self.hub.users:
            return
        sub = self._users.pop(user_id, None)
        if sub is not None:
            asyncio.ensure_future(_quiet_unsubscribe(sub))

    @property
    def user_subscriptions(self) -> int:
        """``deliver.user.*`` subscriptions held (live users plus lingering ones)."""
        return len(self._users)

    def _on_user(self, msg: Msg) -> None:
        user_id = msg.subject.rsplit(".", 1)[-1]
        headers = msg.headers or {}
        count = self.hub.deliver_user(user_id, Outbound(msg.data), headers.get(subjects.HDR_SKIP_CONN))
        self.metrics.relayed(headers.get(subjects.HDR_KIND, "notification"), count)

    def _on_all(self, msg: Msg) -> None:
        count = self.hub.deliver_all(Outbound(msg.data))
        self.metrics.relayed((msg.headers or {}).get(subjects.HDR_KIND, "broadcast"), count)


async def _quiet_unsubscribe(sub: Subscription) -> None:
    try:
        await sub.unsubscribe()
    except Exception:  # connection closed or draining: the subscription is gone anyway
        pass


async def _unsubscribe_when_done(task: asyncio.Task[Subscription]) -> None:
    try:
        sub = await task
    except Exception:
        return
    await _quiet_unsubscribe(sub)
