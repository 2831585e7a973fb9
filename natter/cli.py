"""The ``natter`` command line (typer).

``natter up`` starts the whole stack (natter/up.py); ``natter gateway|auth|chat|notify`` run one
process each (what compose runs); ``natter service-token NAME`` mints a service token;
``natter version`` prints the version.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from natter.bench.cli import app as bench_app
from natter.credentials import CredentialsError, operator_login
from natter.entry import run_service
from natter.up import up as up_command
from shared.config import NatsLogin
from shared.logs import redact

app = typer.Typer(help="natter: real-time chat and notifications over NATS.", no_args_is_help=True)
app.command(name="up")(up_command)
app.add_typer(bench_app, name="bench")


# The process commands. `natter gateway|auth|chat|notify` normally never get here:
# natter.entry.main runs them without loading this module (typer, rich, the launcher, the bench
# tool); these commands exist for `--help` and for callers of this typer app.
@app.command()
def gateway(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="TCP port to listen on."),
) -> None:
    """Run one WebSocket/HTTP gateway process."""
    run_service("gateway", ["--host", host, "--port", str(port)])


@app.command()
def auth() -> None:
    """Run one auth_service replica."""
    run_service("auth", [])


@app.command()
def chat() -> None:
    """Run one chat_service replica."""
    run_service("chat", [])


@app.command()
def notify() -> None:
    """Run one notify_service replica."""
    run_service("notify", [])


async def _cli_connect(servers: list[str], login: NatsLogin) -> Any:
    """A short-lived NATS connection for a CLI action, as ``login``."""
    import nats

    options: dict[str, Any] = {"inbox_prefix": login.inbox_prefix}
    if login.user and login.password is not None:
        options.update(user=login.user, password=login.password)
    return await asyncio.wait_for(
        nats.connect(
            servers=servers,
            name="natter-cli",
            connect_timeout=2,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
            error_cb=_quiet_error_cb,
            **options,
        ),
        timeout=10,
    )


class TokenRole(StrEnum):
    """Roles a service token may carry (shared.internal.ServiceTokenRequest.role)."""

    service = "service"
    admin = "admin"


class ServiceTokenFailed(Exception):
    """An operator request failed; the text is shown to the operator (never a token)."""


async def _quiet_error_cb(error: Exception) -> None:
    """nats-py logs connection errors with a traceback by default; the CLI reports them itself."""


async def operator_request(
    servers: list[str],
    subject: str,
    body: dict[str, Any],
    *,
    timeout: float,
    login: NatsLogin | None = None,
    login_source: str = "",
) -> dict[str, Any]:
    """Send ``body`` to the auth endpoint ``subject`` as ``login`` (the operator: only its NATS
    user may ask ``auth.service_token*`` and ``auth.rotate_keys``) and return the JSON answer.

    Raises:
        ServiceTokenFailed: NATS unreachable or refusing ``login``, auth not answering within
            ``timeout`` seconds (also what a refused publish looks like), or auth's own error.
    """
    from shared.errors import ErrorCode, ProtocolError
    from shared.nats_client import request_json

    try:
        nc = await _cli_connect(servers, login or NatsLogin())
    except Exception as error:
        raise ServiceTokenFailed(
            f"cannot reach NATS at {redact(','.join(servers))} as "
            f"{(login and login.user) or 'an anonymous client'} ({login_source or 'no credentials'}): "
            f"{type(error).__name__}; start the stack with `natter up` (run this where its data dir "
            "is, or pass --data-dir / set NATTER_DATA_DIR), or point NATS_URL at a running NATS"
        ) from error
    try:
        reply = await request_json(nc, subject, body, timeout=timeout)
    except ProtocolError as error:
        if error.code is ErrorCode.UNAVAILABLE:
            raise ServiceTokenFailed(
                f"the auth service did not answer {subject} within {timeout:g}s on "
                f"{redact(','.join(servers))}; is auth running (`natter up`), and is "
                f"{(login and login.user) or 'this anonymous client'} the operator?"
            ) from error
        raise ServiceTokenFailed(f"auth refused: {error.code.value}: {error.message}") from error
    finally:
        await nc.close()
    if not isinstance(reply, dict):
        raise ServiceTokenFailed(f"auth answered {subject} without a JSON object")
    return reply


async def mint_service_token(
    servers: list[str],
    *,
    name: str,
    ttl_days: int,
    role: str,
    timeout: float,
    login: NatsLogin | None = None,
    login_source: str = "",
) -> str:
    """Ask auth_service (``auth.service_token``) for a token; returns the JWT.

    Raises:
        ServiceTokenFailed: as :func:`operator_request`, or an answer without a token.
    """
    from shared.subjects import AUTH_SERVICE_TOKEN

    body = {"name": name, "ttl_days": ttl_days, "role": role}
    reply = await operator_request(
        servers, AUTH_SERVICE_TOKEN, body, timeout=timeout, login=login, login_source=login_source
    )
    token = reply.get("access_token")
    if not isinstance(token, str) or not token:
        raise ServiceTokenFailed("auth answered without an access_token")
    return token


DATA_DIR_OPTION = typer.Option(
    None,
    "--data-dir",
    help="Where `natter up` keeps its data (the operator's NATS credentials); "
    "default $NATTER_DATA_DIR, else ./.natter.",
)


def _operator(subject: str, body: dict[str, Any], data_dir: Path | None, command: str) -> dict[str, Any]:
    """:func:`operator_request` from a CLI command; exits 1 with the reason on failure."""
    from shared.config import CommonSettings

    settings = CommonSettings()
    try:
        login, source = operator_login(data_dir)
        return asyncio.run(
            operator_request(
                settings.nats_servers,
                subject,
                body,
                timeout=settings.request_timeout,
                login=login,
                login_source=source,
            )
        )
    except (CredentialsError, ServiceTokenFailed) as error:
        typer.echo(f"natter {command}: {error}", err=True)
        raise typer.Exit(1) from None


def _when(ms: object) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC seconds, ``-`` for none."""
    from datetime import UTC, datetime

    if not isinstance(ms, int):
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@app.command("service-token")
def service_token(
    name: str | None = typer.Argument(
        None, help="Service name, [A-Za-z0-9_-]{1,48}; the token's sub is svc-NAME."
    ),
    ttl_days: int = typer.Option(365, "--ttl-days", help="Lifetime in days (1..3650)."),
    role: TokenRole = typer.Option(TokenRole.service, "--role", help="service or admin."),
    list_tokens: bool = typer.Option(False, "--list", help="List the service tokens minted so far."),
    revoke: str | None = typer.Option(
        None, "--revoke", metavar="JTI", help="Revoke the token with this id (see --list)."
    ),
    data_dir: Path | None = DATA_DIR_OPTION,
) -> None:
    """Mint a service token for the HTTP API (prints only the token), list them, or revoke one.

    Uses NATS_URL (default nats://127.0.0.1:4222) as the operator: NATTER_NATS_USER and
    NATTER_NATS_PASSWORD if set, else the credentials in the data dir (--data-dir,
    $NATTER_DATA_DIR, ./.natter). Usage: TOKEN=$(natter service-token ci);
    natter service-token --list; natter service-token --revoke JTI (every gateway refuses it
    within 2 s).
    """
    from pydantic import ValidationError

    from shared.internal import ServiceTokenRequest, ServiceTokenRevokeRequest
    from shared.subjects import AUTH_SERVICE_TOKEN, AUTH_SERVICE_TOKEN_LIST, AUTH_SERVICE_TOKEN_REVOKE

    if sum((name is not None, list_tokens, revoke is not None)) != 1:
        typer.echo("natter service-token: give a NAME, --list, or --revoke JTI", err=True)
        raise typer.Exit(2)
    try:
        if revoke is not None:
            ServiceTokenRevokeRequest(jti=revoke)
        elif name is not None:
            request = ServiceTokenRequest(name=name, ttl_days=ttl_days, role=role.value)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        typer.echo(f"natter service-token: invalid arguments: {problems}", err=True)
        raise typer.Exit(2) from None
    if list_tokens:
        reply = _operator(AUTH_SERVICE_TOKEN_LIST, {}, data_dir, "service-token")
        typer.echo("jti\tname\trole\tissued\texpires\trevoked")
        for token in reply.get("tokens", []):
            fields = (token.get("jti"), token.get("name"), token.get("role"))
            times = (
                _when(token.get("issued_ms")),
                _when(token.get("expires_ms")),
                _when(token.get("revoked_ms")),
            )
            typer.echo("\t".join(str(part) for part in (*fields, *times)))
        return
    if revoke is not None:
        record = _operator(AUTH_SERVICE_TOKEN_REVOKE, {"jti": revoke}, data_dir, "service-token")
        typer.echo(f"revoked {revoke} ({record.get('name')}) at {_when(record.get('revoked_ms'))}")
        return
    body = {"name": request.name, "ttl_days": request.ttl_days, "role": request.role}
    reply = _operator(AUTH_SERVICE_TOKEN, body, data_dir, "service-token")
    token = reply.get("access_token")
    if not isinstance(token, str) or not token:
        typer.echo("natter service-token: auth answered without an access_token", err=True)
        raise typer.Exit(1)
    typer.echo(token)


@app.command("rotate-keys")
def rotate_keys(data_dir: Path | None = DATA_DIR_OPTION) -> None:
    """Make a new RS256 key sign from now on. The old key keeps verifying until the last token
    it signed has expired (a day for access tokens, longer for service tokens it signed)."""
    from shared.subjects import AUTH_ROTATE_KEYS

    reply = _operator(AUTH_ROTATE_KEYS, {}, data_dir, "rotate-keys")
    retired = reply.get("retired") or {}
    typer.echo(
        f"kid {reply.get('kid')} signs now; kid {retired.get('kid')} verifies until "
        f"{_when(retired.get('verifies_until_ms'))}"
    )


NATS_STORE_DIR_OPTION = typer.Option(
    None,
    "--nats-store-dir",
    envvar="NATTER_NATS_STORE_DIR",
    exists=True,
    file_okay=False,
    help="The NATS server's JetStream store directory, when this machine or container can see "
    "it (compose mounts it read-only): without NATTER_CHAT_ATTACHMENTS_MAX_BYTES, attachments "
    "may then hold a quarter of the disk under it.",
)

NATS_STORE_NODES_OPTION = typer.Option(
    1,
    "--nats-store-nodes",
    envvar="NATTER_NATS_STORE_NODES",
    min=1,
    help="NATS nodes keeping their store on that same disk (three containers on one host: 3).",
)


@app.command()
def provision(
    data_dir: Path | None = DATA_DIR_OPTION,
    nats_store_dir: Path | None = NATS_STORE_DIR_OPTION,
    nats_store_nodes: int = NATS_STORE_NODES_OPTION,
) -> None:
    """Create or update every stream and KV bucket, as the operator (idempotent).

    Services may not create streams (docs/security.md), so this runs before them: `natter up`
    does it itself; compose runs it once per `up`. Reads NATS_URL, NATTER_STREAM_REPLICAS and
    NATTER_CHAT_RETENTION_DAYS, NATTER_CHAT_ROOM_SHARDS and NATTER_CHAT_ATTACHMENTS_MAX_BYTES; the
    login as for `natter service-token`.
    """
    from chat_service.config import Settings as ChatSettings
    from natter.launcher import provision as run_provision
    from shared.logs import configure_logging
    from shared.provisioning import StoreDisk

    settings = ChatSettings()
    configure_logging(settings.log_level)  # what provisioning decided (the attachments' cap) on stderr
    try:
        login, source = operator_login(data_dir)
        disk = StoreDisk.of(nats_store_dir, nats_store_nodes) if nats_store_dir is not None else None
        names = run_provision(
            settings.nats_url,
            login=login,
            replicas=settings.stream_replicas,
            retention_days=settings.retention_days,
            room_shards=settings.room_shards,
            attachments_max_bytes=settings.attachments_max_bytes,
            disk=disk,
        )
    except CredentialsError as error:
        typer.echo(f"natter provision: {error}", err=True)
        raise typer.Exit(1) from None
    except Exception as error:
        typer.echo(
            f"natter provision: failed at {redact(settings.nats_url)} as {login.user or 'anonymous'} "
            f"({source}): {error!r}",
            err=True,
        )
        raise typer.Exit(1) from None
    typer.echo(f"provisioned {len(names)} streams and buckets: {', '.join(names)}")


@app.command("nats-config")
def nats_config(
    update: str | None = typer.Option(
        None, "--update", help="Rewrite the block between the nats-auth markers of this file."
    ),
) -> None:
    """Print nats-server's `authorization` block: one user per tier with least-privilege
    permissions, passwords read from $NATTER_NATS_PASSWORD_<TIER> (what compose runs).

    deploy/nats/nats.conf holds a copy: natter nats-config --update deploy/nats/nats.conf
    """
    from shared.nats_auth import CONFIG_BEGIN, CONFIG_END, authorization_block

    _print_or_update("nats-config", authorization_block(), update, begin=CONFIG_BEGIN, end=CONFIG_END, gap="")


@app.command("k8s-nats-values")
def k8s_nats_values() -> None:
    """Print the values for the official NATS Helm chart that run natter's NATS on Kubernetes
    (3 JetStream nodes, natter's users and permissions): deploy/k8s/nats-values.yaml holds a copy."""
    from natter.k8s import render

    typer.echo(render(), nl=False)


def _print_or_update(command: str, text: str, update: str | None, **markers: str) -> None:
    """Print ``text``, or with ``update`` rewrite that file's generated block with it
    (:func:`natter.envdoc.replace_block`; ``markers`` are its ``begin``/``end``/``gap``)."""
    from natter.envdoc import replace_block

    if update is None:
        typer.echo(text, nl=False)
        return
    path = Path(update)
    try:
        path.write_text(replace_block(path.read_text(), text, **markers))
    except (OSError, ValueError) as error:
        typer.echo(f"natter {command}: {update}: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"updated {update}", err=True)


@app.command("compose-env")
def compose_env() -> None:
    """Print fresh random NATS passwords for compose, one per tier and one for cluster routes,
    as `.env` lines: natter compose-env > .env (keep the file: NATS needs the same ones later)."""
    from shared.nats_auth import ROUTE_PASSWORD_ENV, TIERS, new_password, password_env

    for name in [password_env(tier) for tier in TIERS] + [ROUTE_PASSWORD_ENV]:
        typer.echo(f"{name}={new_password()}")


@app.command("env-doc")
def env_doc(
    update: str | None = typer.Option(
        None, "--update", help="Rewrite the table between the env-doc markers of this Markdown file."
    ),
) -> None:
    """Print every environment variable natter reads (from the settings models) as Markdown.

    docs/deploy.md holds a copy: natter env-doc --update docs/deploy.md
    """
    from natter.envdoc import render_markdown

    _print_or_update("env-doc", render_markdown(), update)


@app.command("webhook-receiver")
def webhook_receiver(
    secret: str = typer.Option(..., "--secret", envvar="NATTER_WEBHOOK_SECRET", help="The webhook's secret."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(9000, help="TCP port to listen on."),
) -> None:
    """Receive natter webhooks: verify each signature, drop repeats by event id, print each
    event as a JSON line (docs/integrations.md; a starting point for your own receiver)."""
    from natter.webhook_receiver import make_server

    server = make_server(host, port, secret)
    typer.echo(
        f"listening on http://{host}:{port}/ (register it with NATTER_WEBHOOK_ALLOWED_HOSTS={host})", err=True
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
def version() -> None:
    """Print natter's version."""
    from shared import __version__

    typer.echo(f"natter {__version__}")
