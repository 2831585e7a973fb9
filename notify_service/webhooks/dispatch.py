"""Webhook deliveries, driven by durable JetStream consumers (DESIGN.md rule 16; PROTOCOL.md
section 12): at least once, in order, retried with backoff for 24 h.

Two stages, so that a slow or failing receiver holds up only itself:

1. **Fan-out** (:class:`Dispatcher`): one replica at a time, the holder of the lease
   ``webhooks-dispatch`` (:mod:`shared.leases`), follows the feed's eight subjects of ``EVENTS``
   with an ordered consumer from its checkpoint, finds the webhooks that want each event
   (:meth:`Webhook.wants`; a room's privacy is asked of chat, ``chat.access``, and cached
   briefly) and queues a job ``{"seq","id","type"}`` on ``hook.<webhook id>`` in the
   ``WEBHOOKS`` stream, ``Nats-Msg-Id`` ``<webhook id>:<event id>``, before it looks at the next
   event. The checkpoint (the last stream sequence fanned out, on ``hooklog._dispatch`` in
   ``WEBHOOK_LOG``) is written at most once a second. A replica killed in between leaves the
   checkpoint behind: the next holder (within the lease's 10 s) fans out again from there and
   the repeated jobs are dropped by their ids (``WEBHOOKS``' 10-minute duplicate window). Events
   cost no request and no ack each (it used to be a pull request and an ack per event on a
   durable consumer, ``notify-webhooks``, which a replica of this version replaces, starting
   after its ack floor). While no webhook is registered the holder reads nothing of ``EVENTS``:
   once a second it looks at the stream's last sequence and then at the registrations, and
   moves the checkpoint there (a deployment without webhooks pays nothing per event; 1,000
   room events a second cost notify ~6% of a core and nats-server the pushes, docs/benchmarks.md).
2. **Delivery** (:class:`Sender`): each webhook has its durable consumer ``hook-<id>`` on its
   subject, ``max_ack_pending`` 1: one delivery in flight per webhook across every replica, so a
   webhook receives its events in the order they were fanned out (room events in ``seq`` order
   per room). The event is read from ``EVENTS`` at delivery time (by sequence), so a message
   deleted before its delivery is never sent (its copy there was erased); it is POSTed with
   the signature headers (:mod:`shared.webhook_signing`) to the address the SSRF check pinned
   (:mod:`notify_service.webhooks.targets`), no redirects, 10 s timeout. A 2xx acks it;
   anything else naks it with a delay of 1, 2, 4 ... seconds, at most an hour, until 24 h after
   the event, when it is terminated and logged as given up. A replica killed mid-delivery leaves
   the job unacked: another replica delivers it again after ``ack_wait`` (30 s), which is the
   "at least once" receivers de-duplicate by event ``id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from datetime import datetime
from typing import Any, Final

import httpx
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue

from notify_service.webhooks.registry import Webhook, WebhookStore
from notify_service.webhooks.targets import check, parse_allowed
from shared import __version__, subjects
from shared.errors import ProtocolError
from shared.events import EVENT_TYPES, feed_subject
from shared.leases import RENEW_EVERY, RETRY_EVERY, Lease
from shared.nats_client import request_json
from shared.protocol import utc_timestamp
from shared.stream_reader import direct_get
from shared.streams import publish_acked
from shared.webhook_signing import signed_headers

logger = logging.getLogger(__name__)

#: The durable consumer that fanned events out before the lease (its ack floor is where a first
#: lease holder starts; it is then deleted).
DISPATCH_DURABLE: Final = "notify-webhooks"
#: Seconds between checkpoint writes while fanning out (a new holder repeats at most this much).
CHECKPOINT_EVERY: Final = 1.0
#: Seconds between checkpoint writes with nothing new (``WEBHOOK_LOG`` keeps messages 7 days).
CHECKPOINT_REFRESH: Final = 6 * 3600.0
#: Seconds the dispatcher reuses its read of the registrations.
REGISTRY_TTL: Final = 1.0
#: Seconds a room's privacy answer is reused.
PRIVACY_TTL: Final = 5.0
#: Seconds before an unacked job or event comes back (a killed replica's work).
ACK_WAIT: Final = 30.0
#: Which replica made an attempt (in the deliveries log): ``<host>:<pid>``.
REPLICA: Final = f"{socket.gethostname()}:{os.getpid()}"
#: Deliveries say who sends them (and which replica: useful in a receiver's logs).
USER_AGENT: Final = f"natter-webhooks/{__version__} ({REPLICA})"
#: Longest backoff between two attempts, seconds.
MAX_BACKOFF: Final = 3600.0


def backoff(attempt: int) -> float:
    """Seconds before attempt ``attempt + 1`` after ``attempt`` failures (1, 2, 4 ... 3600)."""
    return min(MAX_BACKOFF, 2.0 ** max(0, attempt - 1))


def event_age(event: dict[str, Any], now: float) -> float:
    """Seconds since the event's ``created_at`` (0 when unreadable)."""
    try:
        created = datetime.fromisoformat(str(event["created_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return 0.0
    return max(0.0, now - created.timestamp())


class Dispatcher:
    """Stage 1 (module docstring): run by every replica, active in the lease holder only.

    Args:
        nc: the replica's connection.
        store: the registrations.
        lease_bucket: the ``natter_leases`` bucket.
        timeout: seconds to wait for each NATS answer.
    """

    def __init__(self, nc: Any, store: WebhookStore, lease_bucket: KeyValue, *, timeout: float) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=timeout)
        self.store = store
        self.lease = Lease(lease_bucket, subjects.LEASE_WEBHOOK_DISPATCH)
        self.timeout = timeout
        self._privacy: dict[str, tuple[float, bool]] = {}
        self._webhooks: tuple[float, list[Webhook]] = (0.0, [])

    async def run(self) -> None:
        """Take the lease when free and fan events out while holding it, forever."""
        while True:
            if await self.lease.take():
                try:
                    await self._follow()
                except asyncio.CancelledError:
                    await self.lease.release()
                    raise
                except Exception:
                    logger.exception("webhooks: dispatcher stopped; retrying")
                    await self.lease.release()  # another replica may take over at once
            await asyncio.sleep(RETRY_EVERY)

    async def _follow(self) -> None:
        """Fan out from the checkpoint while the lease holds: read ``EVENTS`` while a webhook is
        registered, only watch for one while none is (returns when the lease is lost)."""
        start: int | None = await self._checkpoint()
        while start is not None:
            start = await self._wait_for_webhooks(start)
            if start is not None:
                start = await self._fan_out(start)

    async def _wait_for_webhooks(self, start: int) -> int | None:
        """While no webhook is registered, read nothing of ``EVENTS``: every second look at the
        stream's last sequence, *then* at the registrations, and while there are none move the
        checkpoint to that sequence (every event up to it was stored before the registrations
        were seen empty, so no webhook can want it). Returns the checkpoint to fan out from once
        a webhook is registered (events stored since the last empty look are fanned out: a new
        webhook gets events from at most a second before its registration), or None when the
        lease is lost.
        """
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + RENEW_EVERY
        saved = start
        save_at = loop.time() + CHECKPOINT_EVERY
        announced = False
        while True:
            last = int((await self.js.stream_info(subjects.EVENTS_STREAM)).state.last_seq)
            self._webhooks = (time.monotonic(), await self.store.all())
            if self._webhooks[1]:
                if announced:
                    logger.info("webhooks: a webhook is registered")
                return start
            if not announced:
                logger.info("webhooks: none registered: not reading EVENTS until one is")
                announced = True
            start = max(start, last)
            now = loop.time()
            if now >= save_at and start != saved:
                await self._save_checkpoint(start)
                saved, save_at = start, now + CHECKPOINT_EVERY
            if now >= renew_at:
                if not await self.lease.renew():
                    return None
                renew_at = now + RENEW_EVERY
            await asyncio.sleep(REGISTRY_TTL)

    async def _fan_out(self, start: int) -> int | None:
        """Dispatch every event after ``start`` in order until no webhook is registered (returns
        the last sequence dispatched, saved as the checkpoint) or the lease is lost (None)."""
        logger.info("webhooks: dispatching from EVENTS seq %d", start + 1)
        sub = await self.js.subscribe(
            "",
            stream=subjects.EVENTS_STREAM,
            ordered_consumer=True,
            config=ConsumerConfig(
                filter_subjects=[feed_subject(t) for t in EVENT_TYPES],
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start + 1,
            ),
        )
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + RENEW_EVERY
        saved = done = start
        save_at = loop.time() + CHECKPOINT_EVERY
        refresh_at = loop.time() + CHECKPOINT_REFRESH
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=max(0.01, min(renew_at, save_at) - loop.time()))
                except nats.errors.TimeoutError:
                    msg = None
                if msg is not None:
                    await self._dispatch_until_stored(msg)
                    done = msg.metadata.sequence.stream
                if not await self._registered():
                    # Nobody listens (the last webhook was deleted): stop reading. Events after
                    # ``done`` go, as every event does, to the webhooks registered when they are
                    # looked at: none, unless one is registered before the next look.
                    await self._save_checkpoint(done)
                    return done
                now = loop.time()
                if now >= save_at:
                    if done != saved or now >= refresh_at:
                        await self._save_checkpoint(done)
                        saved, refresh_at = done, now + CHECKPOINT_REFRESH
                    save_at = now + CHECKPOINT_EVERY
                if now >= renew_at:
                    if not await self.lease.renew():
                        return None
                    renew_at = now + RENEW_EVERY
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _dispatch_until_stored(self, msg: Msg) -> None:
        """:meth:`dispatch` ``msg``, retrying while storage refuses (the next event waits: each
        webhook's jobs stay in event order). Gives up only with the lease."""
        delay = 0.5
        while True:
            try:
                await self.dispatch(msg)
                return
            except (ProtocolError, nats.errors.Error, TimeoutError) as error:
                logger.warning("webhooks: event %s not dispatched yet: %r", msg.subject, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RENEW_EVERY)
            if not await self.lease.renew():
                raise RuntimeError("lease lost while an event waited to be dispatched")

    async def _checkpoint(self) -> int:
        """The last fanned-out ``EVENTS`` sequence. With none stored: after the ack floor of the
        durable consumer earlier versions used (which is then deleted), else the stream's end
        (webhooks get events from their registration on, not history)."""
        found = await direct_get(
            self.nc, subjects.WEBHOOK_LOG_STREAM, last_by_subject=subjects.WEBHOOK_CHECKPOINT
        )
        if found is not None and found.data.isdigit():
            return int(found.data)
        try:
            info = await self.js.consumer_info(subjects.EVENTS_STREAM, DISPATCH_DURABLE)
            start = int(info.ack_floor.stream_seq if info.ack_floor else 0)
        except nats.js.errors.NotFoundError:
            info = None
            start = int((await self.js.stream_info(subjects.EVENTS_STREAM)).state.last_seq)
        await self._save_checkpoint(start)
        if info is not None:
            with contextlib.suppress(nats.errors.Error):
                await self.js.delete_consumer(subjects.EVENTS_STREAM, DISPATCH_DURABLE)
            logger.info("webhooks: replaced consumer %s (ack floor %d)", DISPATCH_DURABLE, start)
        return start

    async def _save_checkpoint(self, stream_seq: int) -> None:
        await publish_acked(
            self.nc, subjects.WEBHOOK_CHECKPOINT, str(stream_seq).encode(), timeout=self.timeout
        )

    async def dispatch(self, msg: Msg) -> int:
        """Queue a job per interested webhook, all at once; returns how many.

        Raises:
            nats.errors.Error, TimeoutError, ProtocolError: a job was not stored, or the room's
                privacy could not be asked (the caller tries the event again; the jobs that were
                stored are dropped as duplicates then).
        """
        registered = await self._registered()
        if not registered:  # the usual case: nothing to parse
            return 0
        try:
            event = json.loads(msg.data)
            event_id, event_type = str(event["id"]), str(event["type"])
            data = event.get("data") or {}
        except (ValueError, KeyError, TypeError):
            logger.warning("webhooks: unreadable event at %s skipped", msg.subject)
            return 0
        room = data.get("room") if isinstance(data.get("room"), str) else None
        webhooks = [w for w in registered if event_type in w.events]
        if not webhooks:
            return 0
        private = await self._is_private(room) if room else False
        job = json.dumps(
            {"seq": msg.metadata.sequence.stream, "id": event_id, "type": event_type}, separators=(",", ":")
        ).encode()
        # One job per webhook, each on its own subject: published together (each webhook's order
        # holds because the next event is fetched only after all of this one's jobs are stored).
        wanted = [w for w in webhooks if w.wants(event_type, room, private)]
        stored = await asyncio.gather(
            *(
                self.js.publish(
                    subjects.webhook_subject(webhook.id),
                    job,
                    stream=subjects.WEBHOOKS_STREAM,
                    timeout=self.timeout,
                    headers={"Nats-Msg-Id": f"{webhook.id}:{event_id}"},
                )
                for webhook in wanted
            ),
            return_exceptions=True,
        )
        failed = next((outcome for outcome in stored if isinstance(outcome, BaseException)), None)
        if failed is not None:
            raise failed  # the event is nakked and comes back; the stored jobs are de-duplicated
        return len(wanted)

    async def _registered(self) -> list[Webhook]:
        """The registrations, read at most once a second (a new webhook gets events from about
        a second after its registration)."""
        now = time.monotonic()
        if now - self._webhooks[0] >= REGISTRY_TTL:
            self._webhooks = (now, await self.store.all())
        return self._webhooks[1]

    async def _is_private(self, room: str) -> bool:
        now = time.monotonic()
        cached = self._privacy.get(room)
        if cached is not None and now - cached[0] < PRIVACY_TTL:
            return cached[1]
        try:
            answer = await request_json(self.nc, subjects.CHAT_ACCESS, {"room": room}, timeout=self.timeout)
            private = bool(answer.get("private", True))
        except ProtocolError as error:
            if error.code.value != "room_not_found":
                raise
            private = True  # gone: treat as private (send nothing that is not asked for by name)
        self._privacy[room] = (now, private)
        return private


class Sender:
    """Stage 2 (module docstring): one delivery loop per registered webhook in this replica."""

    def __init__(
        self,
        nc: Any,
        store: WebhookStore,
        *,
        allowed_hosts: str,
        timeout: float,
        http_timeout: float = 10.0,
        give_up_after: float = 24 * 3600.0,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=timeout)
        self.store = store
        self.allowed = parse_allowed(allowed_hosts)
        self.timeout = timeout
        self.http_timeout = http_timeout
        self.give_up_after = give_up_after
        self._loops: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        """Keep one delivery loop per registered webhook (checked every second)."""
        try:
            while True:
                try:
                    current = {w.id: w for w in await self.store.all()}
                except (nats.errors.Error, TimeoutError) as error:
                    logger.warning("webhooks: registry not read: %r", error)
                    current = None
                if current is not None:
                    for webhook_id in list(self._loops):
                        if webhook_id not in current:
                            self._loops.pop(webhook_id).cancel()
                    for webhook_id, webhook in current.items():
                        loop = self._loops.get(webhook_id)
                        if loop is None or loop.done():
                            self._loops[webhook_id] = asyncio.create_task(self._deliver_loop(webhook))
                await asyncio.sleep(1.0)
        finally:
            for task in self._loops.values():
                task.cancel()

    async def _deliver_loop(self, webhook: Webhook) -> None:
        durable = f"hook-{webhook.id}"
        config = ConsumerConfig(
            durable_name=durable,
            filter_subject=subjects.webhook_subject(webhook.id),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            max_ack_pending=1,
            ack_wait=ACK_WAIT,
        )
        async with httpx.AsyncClient(timeout=self.http_timeout, follow_redirects=False) as http:
            while True:
                try:  # creating a consumer that exists with this config changes nothing
                    await self.js.add_consumer(subjects.WEBHOOKS_STREAM, config)
                    sub = await self.js.pull_subscribe_bind(durable, stream=subjects.WEBHOOKS_STREAM)
                except (nats.errors.Error, TimeoutError) as error:
                    logger.warning("webhook %s: bind failed: %r", webhook.id, error)
                    await asyncio.sleep(1.0)
                    continue
                while True:
                    try:
                        msgs = await sub.fetch(1, timeout=5)
                    except TimeoutError:
                        continue
                    except nats.js.errors.APIError:
                        break  # consumer gone: bind again (or the webhook was deleted)
                    except nats.errors.Error as error:
                        logger.warning("webhook %s: fetch failed: %r", webhook.id, error)
                        await asyncio.sleep(1.0)
                        continue
                    for msg in msgs:
                        await self.deliver(http, webhook, msg)

    async def deliver(self, http: httpx.AsyncClient, webhook: Webhook, msg: Msg) -> None:
        """One attempt of one job: POST the event, then ack, nak with backoff, or give up."""
        attempt = msg.metadata.num_delivered or 1
        try:
            job = json.loads(msg.data)
            seq, event_id, event_type = int(job["seq"]), str(job["id"]), str(job["type"])
        except (ValueError, KeyError, TypeError):
            await msg.term()
            return
        stored = await direct_get(self.nc, subjects.EVENTS_STREAM, seq=seq, timeout=self.timeout)
        record: dict[str, Any] = {
            "event_id": event_id,
            "type": event_type,
            "attempt": attempt,
            "at": utc_timestamp(),
            "by": REPLICA,
        }
        if stored is None:  # erased (a deleted message) or aged out: nothing to send
            await msg.ack()
            await self.store.log(
                webhook.id, {**record, "status": None, "error": "event gone", "duration_ms": 0}
            )
            return
        body = stored.data
        age = event_age(json.loads(body), time.time())
        started = time.perf_counter()
        status: int | None = None
        error = ""
        try:
            target = await check(webhook.url, self.allowed)
            headers = {
                **signed_headers(webhook.id, webhook.secret, body),
                "Host": target.host_header,
                "User-Agent": USER_AGENT,
            }
            extensions = {"sni_hostname": target.server_name} if target.url.startswith("https") else {}
            response = await http.post(target.url, content=body, headers=headers, extensions=extensions)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except ProtocolError as refused:
            error = refused.message
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"[:300]
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        await self.store.log(
            webhook.id, {**record, "status": status, "error": error or None, "duration_ms": duration_ms}
        )
        if not error:
            await msg.ack()
        elif age >= self.give_up_after:
            logger.warning(
                "webhook %s: gave up on %s after %d attempts: %s", webhook.id, event_id, attempt, error
            )
            await msg.term()
        else:
            await msg.nak(delay=backoff(attempt))
