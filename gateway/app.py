"""The gateway's FastAPI application: ``/ws``, the HTTP API, ``/health``, ``/metrics``, ``/``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from gateway.config import Settings
from gateway.connection import Connection
from gateway.http_api import router
from gateway.node import Node
from shared import __version__
from shared.errors import ProtocolError

STATIC_DIR = Path(__file__).parent / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the NATS connection is made in the lifespan (startup) and drained at exit."""
    settings = settings or Settings()
    node = Node(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.stop()

    app = FastAPI(
        title="natter gateway",
        version=__version__,
        description="WebSocket and HTTP API of natter (PROTOCOL.md v1).",
        lifespan=lifespan,
    )
    app.state.node = node
    app.include_router(router)

    @app.exception_handler(ProtocolError)
    async def protocol_error(request: Request, error: ProtocolError) -> Response:
        headers = {}
        if "retry_after" in error.extra:
            headers["Retry-After"] = str(max(1, round(float(error.extra["retry_after"]))))
        return JSONResponse(
            {"detail": error.message, "code": error.code.value}, error.status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        errors = [
            {
                "loc": [str(p) for p in item.get("loc", ())],
                "msg": item.get("msg", ""),
                "type": item.get("type", ""),
            }
            for item in error.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p != "body") or "body"
        return JSONResponse({"detail": f"{where}: {first['msg']}", "errors": errors}, 422)

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await Connection(websocket, node).run()

    @app.get("/health", tags=["ops"])
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

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(node.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(STATIC_DIR / "index.html")

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
