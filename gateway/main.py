"""Run one gateway process under uvicorn (uvloop, httptools, websockets-sansio slimmed by
:mod:`gateway.server_protocol`)."""

from __future__ import annotations

import uvicorn

from gateway.app import create_app
from gateway.config import Settings
from gateway.edge import http_protocol_class
from gateway.server_protocol import protocol_class
from shared.logs import configure_logging


def serve(*, host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    """Serve the gateway on ``host:port`` until SIGTERM/SIGINT.

    uvicorn enforces the frame limit (``ws_max_size``: larger frames close 1009), sends pings every
    ``ping_interval`` seconds and closes sockets that miss ``ping_timeout`` (RFC 6455 section 5.5.2);
    on shutdown it closes sockets 1012 and the lifespan drains NATS.
    """
    settings = settings or Settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        loop="uvloop",
        http=http_protocol_class(settings.header_timeout, settings.body_timeout),
        ws=protocol_class(),
        ws_max_size=settings.max_frame_bytes,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        ws_per_message_deflate=settings.per_message_deflate,
        # X-Forwarded-For only from the configured proxies: uvicorn's default trusts 127.0.0.1,
        # which on one machine is every local client (docs/security.md).
        proxy_headers=bool(settings.forwarded_allow_ips.strip()),
        forwarded_allow_ips=settings.forwarded_allow_ips.strip() or "",
        log_config=None,
        timeout_graceful_shutdown=10,
        backlog=4096,
    )
