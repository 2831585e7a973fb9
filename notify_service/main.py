"""notify_service entry point: ``python -m natter notify`` runs :func:`serve`.

One replica = one NATS micro service ``notify`` (queue group ``notify``: replicas share the
requests) + the durable event consumers ``notify-welcome``, ``notify-mentions`` and
``notify-redactions`` (replicas share them too). Setup is idempotent and retried, so replicas
start in any order and before or after NATS (DESIGN.md rule 9).
"""

from __future__ import annotations

import asyncio
import logging

import nats.errors
from nats.aio.client import Client

from notify_service.config import Settings
from notify_service.consumers import (
    MENTIONS_CONSUMER,
    REDACTIONS_CONSUMER,
    WELCOME_CONSUMER,
    handle_chat_message,
    handle_message_deleted,
    handle_user_registered,
    run_consumer,
)
from notify_service.handlers import NotifyEndpoints
from notify_service.runtime import Runtime, open_runtime
from notify_service.webhooks.dispatch import Dispatcher, Sender
from shared import __version__, subjects
from shared.logs import configure_logging
from shared.nats_auth import INTERNAL_EVENT_CONSUMERS
from shared.service_runner import ServiceApp
from shared.streams import NotProvisioned, open_bucket

logger = logging.getLogger(__name__)


async def _open_with_retry(nc: Client, settings: Settings) -> Runtime:
    """:func:`open_runtime`, retried with backoff while JetStream is not ready."""
    delay = 0.2
    while True:
        try:
            return await open_runtime(nc, settings)
        except (nats.errors.Error, TimeoutError, NotProvisioned) as error:
            logger.warning("notify setup failed: %r; retrying in %.1fs", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def serve(settings: Settings | None = None, stop: asyncio.Event | None = None) -> None:
    """Run one notify_service replica until SIGTERM/SIGINT or until ``stop`` is set.

    Setup: logging; stream ``NOTIFICATIONS``, stream ``EVENTS``, bucket ``natter_notify_read``;
    then the endpoints ``notify.send|broadcast|list|read`` and the durable consumers.
    """
    settings = settings or Settings()
    configure_logging(settings.log_level)
    app = ServiceApp(
        name="notify",
        version=__version__,
        description="natter notifications: per-user notifications, broadcasts, read state",
        settings=settings,
    )
    endpoints = NotifyEndpoints()
    endpoints.register(app)
    runtime: list[Runtime] = []

    async def setup(nc: Client) -> None:
        opened = await _open_with_retry(nc, settings)
        runtime.append(opened)
        endpoints.bind(opened)

    async def welcome() -> None:
        await run_consumer(runtime[0], WELCOME_CONSUMER, handle_user_registered)

    async def mentions() -> None:
        await run_consumer(runtime[0], MENTIONS_CONSUMER, handle_chat_message)

    async def redactions() -> None:
        await run_consumer(runtime[0], REDACTIONS_CONSUMER, handle_message_deleted)

    async def webhook_fanout() -> None:
        rt = runtime[0]
        leases = await open_bucket(rt.js, subjects.KV_LEASES)
        await Dispatcher(rt.nc, rt.webhooks, leases, timeout=settings.request_timeout).run()

    async def webhook_delivery() -> None:
        rt = runtime[0]
        sender = Sender(
            rt.nc,
            rt.webhooks,
            allowed_hosts=settings.webhook_allowed_hosts,
            timeout=settings.request_timeout,
            http_timeout=settings.webhook_timeout,
            give_up_after=settings.webhook_retry_hours * 3600,
        )
        await sender.run()

    app.background(welcome)
    app.background(mentions)
    app.background(redactions)
    app.background(webhook_fanout)
    app.background(webhook_delivery)
    app.watch(
        lambda: [
            subjects.NOTIFICATIONS_STREAM,
            subjects.EVENTS_STREAM,
            subjects.WEBHOOKS_STREAM,
            subjects.WEBHOOK_LOG_STREAM,
            f"KV_{subjects.KV_NOTIFY_READ}",
            f"KV_{subjects.KV_WEBHOOKS}",
        ],
        consumers=[(subjects.EVENTS_STREAM, durable) for durable in INTERNAL_EVENT_CONSUMERS],
    )
    await app.run(setup, stop=stop)
