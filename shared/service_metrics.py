"""Prometheus metrics of one service replica (auth, chat, notify), prometheus-client.

Every :class:`~shared.service_runner.ServiceApp` counts its requests per endpoint and outcome
and times them; a background task reads the sizes of the streams and buckets the service owns
and how far behind its durable consumers are (JetStream's ``num_pending``, ``num_ack_pending``)
every ``interval`` seconds. With ``NATTER_<SERVICE>_METRICS_PORT`` set the process serves them
in the Prometheus text format on ``http://<NATTER_<SERVICE>_METRICS_HOST>:<port>/metrics``
(prometheus-client's own HTTP server, in a thread), with the process collectors (CPU, memory,
file descriptors, GC). docs/operations.md lists the series; deploy/prometheus scrapes them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import nats.errors
from nats.js import JetStreamContext
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
)

logger = logging.getLogger(__name__)

#: Request latency buckets, seconds (JetStream writes with fsync are milliseconds).
BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServiceMetrics:
    """One replica's series; ``service`` is its name (the ``service`` label)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.requests = Counter(
            "natter_service_requests",
            "Requests handled, by service, endpoint (request subject) and outcome (ok or the error code).",
            ["service", "endpoint", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "natter_service_request_seconds",
            "Time to handle a request, by service and endpoint.",
            ["service", "endpoint"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.stream_messages = Gauge(
            "natter_stream_messages",
            "Messages in a stream or KV bucket the service owns.",
            ["stream"],
            registry=self.registry,
        )
        self.stream_bytes = Gauge(
            "natter_stream_bytes",
            "Bytes in a stream or KV bucket the service owns.",
            ["stream"],
            registry=self.registry,
        )
        self.consumer_pending = Gauge(
            "natter_consumer_pending",
            "Messages a durable consumer has not been delivered yet (its lag).",
            ["stream", "consumer"],
            registry=self.registry,
        )
        self.consumer_ack_pending = Gauge(
            "natter_consumer_ack_pending",
            "Messages delivered to a durable consumer and not acknowledged yet.",
            ["stream", "consumer"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, str], Any] = {}

    def observe(self, endpoint: str, code: str, seconds: float) -> None:
        """Count one request to ``endpoint`` that ended with ``code`` after ``seconds``."""
        key = (endpoint, code)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(self.service, endpoint, code)
        child.inc()
        self.latency.labels(self.service, endpoint).observe(seconds)

    def serve(self, host: str, port: int, healthy: Callable[[], bool] = lambda: True) -> None:
        """Serve ``/metrics`` (Prometheus text format) and ``/health`` (200 ``{"status":
        "healthy"}`` while ``healthy()``, else 503: what a Kubernetes readiness probe asks) on
        ``host:port``, from a daemon thread (the standard library's WSGI server, one thread per
        request, as prometheus-client's own ``start_http_server``).

        Raises:
            OSError: the port cannot be bound.
        """
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/health":
                ok = healthy()
                start_response(
                    "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")]
                )
                return [b'{"status":"healthy"}' if ok else b'{"status":"unhealthy"}']
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]

        class Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True

        class Quiet(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

        server = make_server(host, port, app, server_class=Server, handler_class=Quiet)
        threading.Thread(target=server.serve_forever, name=f"{self.service}-metrics", daemon=True).start()
        logger.info("service=%s metrics on http://%s:%d/metrics, health on /health", self.service, host, port)

    async def watch(
        self,
        js: JetStreamContext,
        streams: Iterable[str],
        consumers: Iterable[tuple[str, str]] = (),
        *,
        interval: float = 15.0,
    ) -> None:
        """Refresh the stream, bucket and consumer gauges every ``interval`` seconds, forever
        (a stream or consumer that does not exist yet is skipped)."""
        streams, consumers = list(streams), list(consumers)
        while True:
            for stream in streams:
                try:
                    info = await js.stream_info(stream)
                except (nats.errors.Error, TimeoutError) as error:
                    logger.debug("metrics: stream %s: %r", stream, error)
                    continue
                self.stream_messages.labels(stream).set(info.state.messages)
                self.stream_bytes.labels(stream).set(info.state.bytes)
            for stream, consumer in consumers:
                try:
                    cinfo = await js.consumer_info(stream, consumer)
                except (nats.errors.Error, TimeoutError) as error:
                    logger.debug("metrics: consumer %s/%s: %r", stream, consumer, error)
                    continue
                self.consumer_pending.labels(stream, consumer).set(cinfo.num_pending or 0)
                self.consumer_ack_pending.labels(stream, consumer).set(cinfo.num_ack_pending or 0)
            await asyncio.sleep(interval)
