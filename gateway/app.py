"""The gateway's ASGI application: ``/ws`` served directly, and a FastAPI app for the HTTP API,
``/health``, ``/metrics`` and ``/``.

``/ws`` bypasses FastAPI's router on purpose: a socket's handler runs for the socket's whole life,
and every routing, middleware and exit-stack layer above it is a coroutine frame (and objects)
held per connection, about 12 KiB per idle socket with FastAPI 0.165, plus its CPU on every
connect (docs/benchmarks.md, "idle" and "connect").
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from gateway.attachments import router as attachments_router
from gateway.attachments import upload_limit
from gateway.config import Settings
from gateway.connection import Connection
from gateway.edge import BodyLimit, lingers
from gateway.http_api import router
from gateway.node import Node
from gateway.wire import RAW_SEND_KEY
from shared import __version__, asyncapi
from shared.errors import ErrorCode, ProtocolError
from shared.gc_control import GcPauses, freeze_startup_objects

STATIC_DIR = Path(__file__).parent / "static"

#: The WebSocket endpoint's path (PROTOCOL.md section 1).
WS_PATH = "/ws"
#: ``code`` of the errors Starlette itself answers (no route, wrong method, unparsable body).
_HTTP_CODES = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}


class Health(BaseModel):
    """``GET /health`` (PROTOCOL.md section 6)."""

    status: str
    active_connections: int
    uptime: float
    version: str
    nats: str
    gateway_id: str


def _methods_of(app: FastAPI, path: str) -> list[str]:
    """The HTTP methods the app's routes serve at ``path`` (RFC 9110 section 10.2.1 ``Allow``)."""
    methods: set[str] = set()
    for route in app.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _validation_response(items: Sequence[Any]) -> Response:
    """422 ``{"detail","code":"validation_error","errors":[{loc,msg,type}]}``."""
    errors = [
        {
            "loc": [str(p) for p in item.get("loc", ())],
            "msg": str(item.get("msg", "")),
            "type": str(item.get("type", "")),
        }
        for item in items
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(p for p in first["loc"] if p != "body") or "body"
    body = {"detail": f"{where}: {first['msg']}", "code": ErrorCode.VALIDATION_ERROR.value, "errors": errors}
    return JSONResponse(body, 422)


class GatewayApp:
    """The ASGI entry point: WebSocket scopes for ``/ws`` go straight to a
    :class:`~gateway.connection.Connection`; everything else (HTTP, lifespan, other WebSocket
    paths, which FastAPI refuses with 403) goes to the FastAPI app ``api``.

    The server's ``send`` callable is kept in the scope (``natter.raw_send``) so that
    :func:`gateway.wire.direct_sink` can write prebuilt frames to uvicorn's transport.
    """

    def __init__(self, api: FastAPI, node: Node) -> None:
        self.fastapi = api
        settings = node.settings
        #: every HTTP request passes the body limit first (gateway.edge).
        self.api: ASGIApp = BodyLimit(
            api,
            max_bytes=settings.max_body_bytes,
            timeout=settings.body_timeout,
            # uploads are read as they arrive, refused as soon as they pass their limit
            streamed=lambda path: upload_limit(path, settings.attachment_max_bytes),
            linger=lingers(),
        )
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == WS_PATH:
            scope[RAW_SEND_KEY] = send
            await Connection(WebSocket(scope, receive, send), self.node).run()
            return
        await self.api(scope, receive, send)


def create_app(settings: Settings | None = None) -> GatewayApp:
    """Build the app; the NATS connection is made in the lifespan (startup) and drained at exit."""
    settings = settings or Settings()
    node = Node(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pauses = GcPauses(node.metrics.registry)
        await node.start()
        freeze_startup_objects()  # shared.gc_control: full collections skip what startup made
        try:
            yield
        finally:
            pauses.close()
            await node.stop()

    app = FastAPI(
        title="natter gateway",
        version=__version__,
        description="WebSocket and HTTP API of natter (PROTOCOL.md v1).",
        lifespan=lifespan,
    )
    app.state.node = node
    app.include_router(router)
    app.include_router(attachments_router)

    @app.exception_handler(ProtocolError)
    async def protocol_error(request: Request, error: ProtocolError) -> Response:
        headers = {}
        if "retry_after" in error.extra:
            headers["Retry-After"] = str(max(1, math.ceil(float(error.extra["retry_after"]))))
        body: dict[str, Any] = {"detail": error.message, "code": error.code.value}
        if error.code is ErrorCode.VALIDATION_ERROR:
            body["errors"] = list(error.extra.get("details", []))
        return JSONResponse(body, error.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        return _validation_response(error.errors())

    @app.exception_handler(ValidationError)
    async def internal_validation_error(request: Request, error: ValidationError) -> Response:
        # A body the route accepted that an internal request model refuses: still the
        # client's input (never a 5xx), reported like any validation error.
        return _validation_response(error.errors(include_url=False, include_input=False))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(error.status_code, "http_error")
        headers = dict(error.headers or {})
        if error.status_code == 405:  # every method of the path, not only those of one route
            headers["Allow"] = ", ".join(_methods_of(app, request.url.path))
        return JSONResponse({"detail": str(error.detail), "code": code}, error.status_code, headers=headers)

    @app.get(
        "/health",
        tags=["ops"],
        response_model=Health,
        responses={503: {"model": Health, "description": "NATS is not connected"}},
    )
    async def health() -> Response:
        """200 healthy when NATS is connected, else 503 unhealthy."""
        connected = node.nats_connected
        body = {
            "status": "healthy" if connected else "unhealthy",
            "active_connections": len(node.connections),
            "uptime": round(time.monotonic() - node.started, 3),
            "version": __version__,
            "nats": "connected" if connected else "disconnected",
            "gateway_id": node.gateway_id,
        }
        return JSONResponse(body, status_code=200 if connected else 503)

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format 0.0.4"}},
    )
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(node.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    asyncapi_document = asyncapi.document()

    @app.get(
        "/asyncapi.json",
        tags=["ops"],
        responses={200: {"content": {"application/json": {}}, "description": "AsyncAPI 3.0.0 document"}},
    )
    async def asyncapi_json() -> Response:
        """The AsyncAPI 3.0.0 document of the event feed (``events.<type>`` on the JetStream
        stream ``EVENTS``), generated from the models that build every event (shared/events.py)."""
        return JSONResponse(asyncapi_document)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/sdk/natter.js", include_in_schema=False)
    async def sdk() -> Response:
        """The JavaScript SDK (docs/sdk-js.md), an ES module. Any origin may import it (CORS
        ``*``: it is public code and is fetched without credentials)."""
        return FileResponse(
            STATIC_DIR / "natter.js",
            media_type="text/javascript",
            headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "no-cache"},
        )

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return GatewayApp(app, node)
