"""Run a natter service as a NATS micro service (DESIGN.md rule 3).

:class:`ServiceApp` registers endpoints on ``nats.micro`` (queue group = the service name, so
replicas share the load and ``$SRV.PING|INFO|STATS`` work with the standard NATS tools), runs
each request in its own task (``nats.micro`` awaits handlers one at a time per subscription;
a bounded semaphore gives concurrency with backpressure), maps errors onto PROTOCOL.md codes
without leaking internals, and shuts down gracefully: stop taking requests, finish in-flight
ones, drain the connection (STYLE.md, nats.py ``examples/micro/service.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import ServiceConfig
from pydantic import ValidationError

from shared import fastpaths
from shared.config import CommonSettings
from shared.errors import ErrorCode, ProtocolError, encode_error_body, encode_service_error
from shared.gc_control import GcPauses, freeze_startup_objects
from shared.nats_client import connect
from shared.service_metrics import ServiceMetrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HeaderedReply:
    """A reply body (bytes, sent as is) with NATS headers for the requester only (e.g. chat's
    ``Natter-Room-Rev`` on ``chat.join``)."""

    body: bytes
    headers: dict[str, str]


#: What an endpoint handler returns: a dict/list (JSON-encoded), raw bytes (sent as is), a
#: :class:`HeaderedReply`, or None.
Reply = dict[str, Any] | list[Any] | bytes | HeaderedReply | None
#: An endpoint handler: the decoded JSON body (``{}`` for an empty body) and the NATS headers.
Handler = Callable[[dict[str, Any], dict[str, str]], Awaitable[Reply]]
#: A background task factory started after setup, cancelled at shutdown.
Background = Callable[[], Awaitable[None]]


def validation_details(error: ValidationError) -> list[dict[str, Any]]:
    """pydantic errors as JSON-safe ``{"loc": [...], "msg": str, "type": str}`` entries."""
    return [
        {"loc": [str(part) for part in item["loc"]], "msg": item["msg"], "type": item["type"]}
        for item in error.errors(include_url=False, include_context=False, include_input=False)
    ]


def validation_error(error: ValidationError) -> ProtocolError:
    """A request body's pydantic error as ``validation_error`` naming its first problem
    (``"<loc>: <msg>"``), as every endpoint answers it (PROTOCOL.md section 7)."""
    details = validation_details(error)
    first = details[0] if details else {"loc": [], "msg": "invalid"}
    message = f"{'.'.join(first['loc']) or 'body'}: {first['msg']}"
    return ProtocolError(ErrorCode.VALIDATION_ERROR, message)


def encode_reply(reply: Reply) -> bytes:
    """Encode a handler's return value as a reply body."""
    if reply is None:
        return b""
    if isinstance(reply, bytes):
        return reply
    if isinstance(reply, HeaderedReply):
        return reply.body
    return json.dumps(reply, separators=(",", ":")).encode()


class ServiceApp:
    """One micro service: endpoints, background tasks, lifecycle.

    Args:
        name: service name (``auth``, ``chat``, ``notify``); also the queue group.
        version: semantic version for ``$SRV.INFO``.
        settings: the process's settings (NATS URL, timeouts).
        max_concurrency: requests handled at once by this replica; beyond it the subscription
            stops reading (NATS then buffers, and a caller may time out and retry).
    """

    def __init__(
        self,
        *,
        name: str,
        version: str,
        description: str,
        settings: CommonSettings,
        max_concurrency: int = 256,
    ) -> None:
        self.name = name
        self.version = version
        self.description = description
        self.settings = settings
        self._handlers: dict[str, Handler] = {}
        self._background: list[Background] = []
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self.nc: Client | None = None
        self.metrics = ServiceMetrics(name)
        self._watched: Callable[[], Iterable[str]] = list
        self._watched_consumers: list[tuple[str, str]] = []

    def watch(self, streams: Callable[[], Iterable[str]], consumers: Iterable[tuple[str, str]] = ()) -> None:
        """Report the sizes of ``streams()`` (streams and ``KV_<bucket>`` names, asked once the
        service is set up) and the lag of ``consumers`` (``(stream, durable)``) as metrics."""
        self._watched = streams
        self._watched_consumers = list(consumers)

    def endpoint(self, subject: str) -> Callable[[Handler], Handler]:
        """Decorator registering ``handler`` for request subject ``subject``."""

        def register(handler: Handler) -> Handler:
            self._handlers[subject] = handler
            return handler

        return register

    def add_endpoint(self, subject: str, handler: Handler) -> None:
        """Register ``handler`` for request subject ``subject``."""
        self._handlers[subject] = handler

    def background(self, factory: Background) -> None:
        """Run ``factory()`` as a task once the service is up; it is cancelled at shutdown."""
        self._background.append(factory)

    async def _handle(self, subject: str, handler: Handler, request: Request) -> None:
        started = time.perf_counter()
        outcome = "ok"
        try:
            try:
                body: Any = json.loads(request.data) if request.data else {}
            except (ValueError, UnicodeDecodeError) as error:
                raise ProtocolError(ErrorCode.INVALID_JSON) from error
            if not isinstance(body, dict):
                raise ProtocolError(ErrorCode.VALIDATION_ERROR, "Request body must be a JSON object")
            reply = await handler(body, dict(request.headers or {}))
            if isinstance(reply, HeaderedReply):
                await request.respond(reply.body, headers=reply.headers)
            else:
                await request.respond(encode_reply(reply))
        except ProtocolError as error:
            outcome = error.code.value
            code, description = encode_service_error(error)
            await _safe_respond_error(request, code, description, encode_error_body(error))
        except ValidationError as error:
            outcome = ErrorCode.VALIDATION_ERROR.value
            code, description = encode_service_error(validation_error(error))
            await _safe_respond_error(request, code, description)
        except asyncio.CancelledError:
            raise
        except Exception:
            outcome = ErrorCode.INTERNAL.value
            logger.exception("service=%s subject=%s unhandled error", self.name, subject)
            code, description = encode_service_error(ProtocolError(ErrorCode.INTERNAL))
            await _safe_respond_error(request, code, description)
        finally:
            self._semaphore.release()
            self.metrics.observe(subject, outcome, time.perf_counter() - started)

    def _dispatcher(self, subject: str, handler: Handler) -> Callable[[Request], Awaitable[None]]:
        async def dispatch(request: Request) -> None:
            await self._semaphore.acquire()
            task = asyncio.create_task(self._handle(subject, handler, request))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

        return dispatch

    async def run(
        self,
        setup: Callable[[Client], Awaitable[None]],
        *,
        stop: asyncio.Event | None = None,
        shutdown_grace: float = 10.0,
    ) -> None:
        """Connect, ``await setup(nc)``, serve until SIGTERM/SIGINT (or ``stop`` is set), then
        stop taking requests, wait up to ``shutdown_grace`` seconds for in-flight ones, drain."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        fastpaths.log_active(gateway=False)
        nc = await connect(self.settings.nats_servers, name=self.name, login=self.settings.nats_login)
        self.nc = nc
        tasks: list[asyncio.Task[None]] = []
        pauses = GcPauses(self.metrics.registry)
        try:
            await _retry_setup(self.name, setup, nc, stop)
            if stop.is_set():
                return
            freeze_startup_objects()  # shared.gc_control: full collections skip what startup made
            service = await add_service(
                nc,
                config=ServiceConfig(
                    name=self.name,
                    version=self.version,
                    description=self.description,
                    queue_group=self.name,
                ),
            )
            for subject, handler in self._handlers.items():
                await service.add_endpoint(
                    name=subject.replace(".", "_"),
                    subject=subject,
                    handler=self._dispatcher(subject, handler),
                )
            tasks = [asyncio.create_task(_supervise(self.name, factory)) for factory in self._background]
            port = getattr(self.settings, "metrics_port", 0)
            if port:
                host = getattr(self.settings, "metrics_host", "127.0.0.1")
                self.metrics.serve(host, port, healthy=lambda: nc.is_connected and not stop.is_set())
            watched = list(self._watched())
            if watched or self._watched_consumers:
                js = nc.jetstream(timeout=self.settings.request_timeout)

                interval = float(getattr(self.settings, "metrics_interval", 15.0))

                async def watch() -> None:
                    await self.metrics.watch(js, watched, self._watched_consumers, interval=interval)

                tasks.append(asyncio.create_task(_supervise(self.name, watch)))
            logger.info("service=%s ready endpoints=%s", self.name, sorted(self._handlers))
            await stop.wait()
            logger.info("service=%s stopping", self.name)
            await service.stop()
            if self._inflight:
                await asyncio.wait(set(self._inflight), timeout=shutdown_grace)
        finally:
            pauses.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await asyncio.wait_for(nc.drain(), timeout=5)
            except Exception:  # already closed, or NATS is gone
                await nc.close()
            logger.info("service=%s stopped", self.name)


async def _retry_setup(
    name: str, setup: Callable[[Client], Awaitable[None]], nc: Client, stop: asyncio.Event
) -> None:
    """Run ``setup`` until it succeeds or ``stop`` is set (DESIGN.md rule 9: a JetStream that is
    still electing leaders or catching up must not kill the service)."""
    delay = 0.25
    while not stop.is_set():
        try:
            await setup(nc)
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning("service=%s setup failed: %r; retrying in %.1fs", name, error, delay)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, 5.0)


async def _safe_respond_error(request: Request, code: str, description: str, data: bytes = b"") -> None:
    try:
        await request.respond_error(code, description, data=data)
    except Exception:  # the connection may be gone; the caller will time out and retry
        logger.warning("could not send error reply subject=%s", request.subject)


async def _supervise(name: str, factory: Background) -> None:
    """Run a background loop forever, restarting it (after 1 s) if it raises."""
    while True:
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("service=%s background task failed; restarting", name)
            await asyncio.sleep(1.0)
