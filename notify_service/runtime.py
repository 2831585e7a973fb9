"""What one notify_service replica holds once connected: NATS, storage, the notifier."""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.client import Client
from nats.js import JetStreamContext

from notify_service.config import Settings
from notify_service.delivery import Notifier
from notify_service.store import NotificationStore
from notify_service.webhooks.registry import WebhookStore
from shared import subjects
from shared.provisioning import require_stream
from shared.streams import open_bucket


@dataclass(frozen=True, slots=True)
class Runtime:
    """The connected parts handlers and consumers share."""

    settings: Settings
    nc: Client
    js: JetStreamContext
    store: NotificationStore
    notifier: Notifier
    webhooks: WebhookStore


async def open_runtime(nc: Client, settings: Settings) -> Runtime:
    """Open stream ``NOTIFICATIONS``, stream ``EVENTS`` and bucket ``natter_notify_read``
    (provisioned by the operator, :mod:`shared.provisioning`) and build the :class:`Runtime`.

    Raises:
        nats.errors.Error: JetStream is not reachable (the caller retries).
        shared.streams.NotProvisioned: a stream or the bucket does not exist yet (retried).
    """
    js = nc.jetstream(timeout=settings.request_timeout)
    await require_stream(js, subjects.NOTIFICATIONS_STREAM)
    await require_stream(js, subjects.EVENTS_STREAM)
    await require_stream(js, subjects.WEBHOOKS_STREAM)
    await require_stream(js, subjects.WEBHOOK_LOG_STREAM)
    kv = await open_bucket(js, subjects.KV_NOTIFY_READ)
    store = NotificationStore(nc=nc, js=js, kv=kv, timeout=settings.request_timeout)
    webhooks = WebhookStore(
        nc, js, await open_bucket(js, subjects.KV_WEBHOOKS), timeout=settings.request_timeout
    )
    return Runtime(
        settings=settings,
        nc=nc,
        js=js,
        store=store,
        notifier=Notifier(nc=nc, store=store),
        webhooks=webhooks,
    )
