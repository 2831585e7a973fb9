"""The ``natter`` command line (typer).

``natter up`` starts the whole stack (natter/up.py); ``natter gateway|auth|chat|notify`` run one
process each (what compose runs); ``natter service-token NAME`` mints a service token;
``natter version`` prints the version.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any

import typer

from natter.bench.cli import app as bench_app
from natter.up import up as up_command
from shared.logs import redact

app = typer.Typer(help="natter: real-time chat and notifications over NATS.", no_args_is_help=True)
app.command(name="up")(up_command)
app.add_typer(bench_app, name="bench")


@app.command()
def gateway(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="TCP port to listen on."),
) -> None:
    """Run one WebSocket/HTTP gateway process."""
    from gateway.main import serve

    serve(host=host, port=port)


def _run_service(serve: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a service's ``serve()`` on uvloop (libuv event loop: less CPU per NATS message)."""
    import uvloop

    uvloop.run(serve())


@app.command()
def auth() -> None:
    """Run one auth_service replica."""
    from auth_service.main import serve

    _run_service(serve)


@app.command()
def chat() -> None:
    """Run one chat_service replica."""
    from chat_service.main import serve

    _run_service(serve)


@app.command()
def notify() -> None:
    """Run one notify_service replica."""
    from notify_service.main import serve

    _run_service(serve)


class TokenRole(StrEnum):
    """Roles a service token may carry (shared.internal.ServiceTokenRequest.role)."""

    service = "service"
    admin = "admin"


class ServiceTokenFailed(Exception):
    """Minting failed; the text is shown to the operator (never contains the token)."""


async def _quiet_error_cb(error: Exception) -> None:
    """nats-py logs connection errors with a traceback by default; the CLI reports them itself."""


async def mint_service_token(
    servers: list[str], *, name: str, ttl_days: int, role: str, timeout: float
) -> str:
    """Ask auth_service (``auth.service_token``) for a token; returns the JWT.

    Raises:
        ServiceTokenFailed: NATS unreachable, auth not answering within ``timeout`` seconds, or
            auth's own error (e.g. ``validation_error``).
    """
    import nats

    from shared.errors import ErrorCode, ProtocolError
    from shared.nats_client import request_json
    from shared.subjects import AUTH_SERVICE_TOKEN

    try:
        nc = await asyncio.wait_for(
            nats.connect(
                servers=servers,
                name="natter-cli",
                connect_timeout=2,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=_quiet_error_cb,
            ),
            timeout=10,
        )
    except Exception as error:
        raise ServiceTokenFailed(
            f"cannot reach NATS at {redact(','.join(servers))} ({type(error).__name__}); "
            "start the stack with `natter up`, or point NATS_URL at a running NATS"
        ) from error
    try:
        body = {"name": name, "ttl_days": ttl_days, "role": role}
        reply = await request_json(nc, AUTH_SERVICE_TOKEN, body, timeout=timeout)
    except ProtocolError as error:
        if error.code is ErrorCode.UNAVAILABLE:
            raise ServiceTokenFailed(
                f"the auth service did not answer {AUTH_SERVICE_TOKEN} within {timeout:g}s on "
                f"{redact(','.join(servers))}; is auth running (`natter up`)?"
            ) from error
        raise ServiceTokenFailed(f"auth refused: {error.code.value}: {error.message}") from error
    finally:
        await nc.close()
    token = reply.get("access_token") if isinstance(reply, dict) else None
    if not isinstance(token, str) or not token:
        raise ServiceTokenFailed("auth answered without an access_token")
    return token


@app.command("service-token")
def service_token(
    name: str = typer.Argument(..., help="Service name, [A-Za-z0-9_-]{1,48}; the token's sub is svc-NAME."),
    ttl_days: int = typer.Option(365, "--ttl-days", help="Lifetime in days (1..3650)."),
    role: TokenRole = typer.Option(TokenRole.service, "--role", help="service or admin."),
) -> None:
    """Mint a service token for the notification HTTP API; prints only the token.

    Uses NATS_URL (default nats://127.0.0.1:4222). Usage: TOKEN=$(natter service-token ci)
    """
    from pydantic import ValidationError

    from shared.config import CommonSettings
    from shared.internal import ServiceTokenRequest

    try:
        request = ServiceTokenRequest(name=name, ttl_days=ttl_days, role=role.value)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        typer.echo(f"natter service-token: invalid arguments: {problems}", err=True)
        raise typer.Exit(2) from None
    settings = CommonSettings()
    try:
        token = asyncio.run(
            mint_service_token(
                settings.nats_servers,
                name=request.name,
                ttl_days=request.ttl_days,
                role=request.role,
                timeout=settings.request_timeout,
            )
        )
    except ServiceTokenFailed as error:
        typer.echo(f"natter service-token: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(token)


@app.command("env-doc")
def env_doc(
    update: str | None = typer.Option(
        None, "--update", help="Rewrite the table between the env-doc markers of this Markdown file."
    ),
) -> None:
    """Print every environment variable natter reads (from the settings models) as Markdown.

    docs/deploy.md holds a copy: natter env-doc --update docs/deploy.md
    """
    from pathlib import Path

    from natter.envdoc import render_markdown, replace_block

    table = render_markdown()
    if update is None:
        typer.echo(table, nl=False)
        return
    path = Path(update)
    try:
        path.write_text(replace_block(path.read_text(), table))
    except (OSError, ValueError) as error:
        typer.echo(f"natter env-doc: {update}: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"updated {update}", err=True)


@app.command()
def version() -> None:
    """Print natter's version."""
    from shared import __version__

    typer.echo(f"natter {__version__}")
