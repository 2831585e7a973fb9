"""Entry point of one chat_service replica (``natter chat``): a NATS micro service named ``chat``.

Setup (idempotent, any start order, DESIGN.md rule 9): the ``CHAT_MESSAGES`` stream (retention
``NATTER_CHAT_RETENTION_DAYS``), the ``EVENTS`` stream, the ``natter_rooms``,
``natter_presence`` and ``natter_gateways`` buckets, and the room ``general``. Then the
``chat.*`` endpoints serve in queue group ``chat`` and the presence janitor runs in the
background until SIGTERM/SIGINT or ``stop``.
"""

from __future__ import annotations

import asyncio

from chat_service.components import Runtime
from chat_service.config import Settings
from chat_service.handlers import ChatHandlers
from chat_service.read_state import ReadState
from chat_service.room_admin import RoomAdmin
from chat_service.room_events import RoomEvents
from shared import __version__
from shared.logs import configure_logging
from shared.service_runner import ServiceApp


async def serve(settings: Settings | None = None, stop: asyncio.Event | None = None) -> None:
    """Run one chat replica until SIGTERM/SIGINT or until ``stop`` is set.

    Args:
        settings: defaults to :class:`Settings` read from the environment.
        stop: set it to shut down gracefully (in-process tests, embedding).
    """
    settings = settings or Settings()
    configure_logging(settings.log_level)
    app = ServiceApp(
        name="chat",
        version=__version__,
        description="natter chat: rooms, messages, history, presence",
        settings=settings,
    )
    runtime = Runtime(settings)
    read_state = ReadState(runtime)
    read_state.register(app)
    ChatHandlers(runtime, read_state).register(app)
    RoomAdmin(runtime).register(app)
    RoomEvents(runtime).register(app)
    app.background(runtime.run_janitor)
    app.background(runtime.run_floors)
    app.background(runtime.run_purges)
    app.background(runtime.run_feed)
    app.background(runtime.run_upload_sweep)
    app.watch(runtime.owned_streams)
    await app.run(runtime.setup, stop=stop)
