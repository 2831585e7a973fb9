"""What one notify_service replica holds once connected: NATS, storage, the notifier."""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.client import Client
from nats.js import JetStreamContext

from notify_service.config import Settings
from notify_service.delivery import Notifier
from notify_service.store import NotificationStore
from shared import subjects
from shared.streams import ensure_bucket, ensure_events_stream, ensure_notifications_stream


@dataclass(frozen=True, slots=True)
class Runtime:
    """The connected parts handlers and consumers share."""

    settings: Settings
    nc: Client
    js: JetStreamContext
    store: NotificationStore
    notifier: Notifier


async def open_runtime(nc: Client, settings: Settings) -> Runtime:
    """Ensure stream ``NOTIFICATIONS``, stream ``EVENTS`` and bucket ``natter_notify_read``
    (idempotent, any start order: DESIGN.md rule 9) and build the :class:`Runtime`.

    Raises:
        nats.errors.Error: JetStream is not reachable (the caller retries).
    """
    js = nc.jetstream(timeout=settings.request_timeout)
    await ensure_notifications_stream(js, replicas=settings.stream_replicas)
    await ensure_events_stream(js, replicas=settings.stream_replicas)
    kv = await ensure_bucket(js, subjects.KV_NOTIFY_READ, replicas=settings.stream_replicas)
    store = NotificationStore(nc=nc, js=js, kv=kv, timeout=settings.request_timeout)
    return Runtime(settings=settings, nc=nc, js=js, store=store, notifier=Notifier(nc=nc, store=store))
