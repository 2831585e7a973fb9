"""auth_service entry point: ``natter auth`` runs :func:`serve` (one replica).

Replicas share the work through the ``auth`` queue group and share all state through JetStream
KV, so any number can run side by side (DESIGN.md rules 1 and 3).
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client

from auth_service.clock import now_ms
from auth_service.config import Settings
from auth_service.handlers import AuthHandlers
from auth_service.keys import KeyRing
from auth_service.passwords import PasswordService
from auth_service.sessions import SessionStore
from auth_service.throttle import LoginThrottle
from auth_service.users import UserStore
from shared import __version__, subjects
from shared.logs import configure_logging
from shared.nats_auth import AUTH_BUCKETS
from shared.provisioning import require_stream
from shared.service_runner import ServiceApp
from shared.streams import open_bucket

logger = logging.getLogger(__name__)

#: Its own buckets (only auth may touch them, shared.nats_auth) and the revocations it writes.
BUCKETS = (*AUTH_BUCKETS, subjects.KV_REVOCATIONS, subjects.KV_TOKEN_REVOCATIONS)


async def serve(settings: Settings | None = None, stop: asyncio.Event | None = None) -> None:
    """Run one auth replica until SIGTERM/SIGINT or until ``stop`` is set.

    Setup (idempotent, any replica in any order): open the KV buckets of :data:`BUCKETS` and
    check the ``EVENTS`` stream (both provisioned by the operator, :mod:`shared.provisioning`;
    retried until they exist), then load or create the shared signing key.
    """
    settings = settings or Settings()
    configure_logging(settings.log_level)
    app = ServiceApp(
        name="auth",
        version=__version__,
        description="natter users, passwords, tokens, sessions and JWKS",
        settings=settings,
    )
    passwords = PasswordService(
        time_cost=settings.argon2_time_cost,
        memory_cost_kib=settings.argon2_memory_cost_kib,
        parallelism=settings.argon2_parallelism,
        concurrency=settings.hash_concurrency,
    )

    async def setup(nc: Client) -> None:
        js = nc.jetstream()
        kv = {name: await open_bucket(js, name) for name in BUCKETS}
        await require_stream(js, subjects.EVENTS_STREAM)
        keys = KeyRing(kv[subjects.KV_AUTH_KEYS], js)
        key = await keys.start(now_ms=now_ms())
        handlers = AuthHandlers(
            settings=settings,
            js=js,
            users=UserStore(kv[subjects.KV_USERS]),
            sessions=SessionStore(
                sessions=kv[subjects.KV_SESSIONS],
                refresh=kv[subjects.KV_REFRESH],
                revocations=kv[subjects.KV_REVOCATIONS],
            ),
            throttle=LoginThrottle(
                kv[subjects.KV_LOGIN_FAILURES],
                kv[subjects.KV_LOGIN_KNOWN],
                pair_free=settings.login_max_failures,
                address_free=settings.login_address_failures,
                user_free=settings.login_user_failures,
                window_seconds=settings.login_failure_window_seconds,
                register_burst=settings.register_burst,
                register_per_second=settings.register_per_second,
            ),
            passwords=passwords,
            keys=keys,
            service_tokens=kv[subjects.KV_SERVICE_TOKENS],
            token_revocations=kv[subjects.KV_TOKEN_REVOCATIONS],
        )
        for subject, handler in handlers.endpoints().items():
            app.add_endpoint(subject, handler)
        logger.info("auth setup done kid=%s replicas=%d", key.kid, settings.stream_replicas)

    app.watch(lambda: [f"KV_{bucket}" for bucket in BUCKETS])
    await app.run(setup, stop=stop)
