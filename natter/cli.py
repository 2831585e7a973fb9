"""The ``natter`` command line (typer).

``natter up`` starts the whole stack; ``natter gateway|auth|chat|notify`` run one process each
(what compose runs); ``natter service-token NAME`` mints a service token.
"""

from __future__ import annotations

import asyncio

import typer

app = typer.Typer(help="natter: real-time chat and notifications over NATS.", no_args_is_help=True)


@app.command()
def gateway(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="TCP port to listen on."),
) -> None:
    """Run one WebSocket/HTTP gateway process."""
    from gateway.main import serve

    serve(host=host, port=port)


@app.command()
def auth() -> None:
    """Run one auth_service replica."""
    from auth_service.main import serve

    asyncio.run(serve())


@app.command()
def chat() -> None:
    """Run one chat_service replica."""
    from chat_service.main import serve

    asyncio.run(serve())


@app.command()
def notify() -> None:
    """Run one notify_service replica."""
    from notify_service.main import serve

    asyncio.run(serve())
