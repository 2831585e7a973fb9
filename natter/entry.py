"""The ``natter`` executable: service commands start without the command line's weight.

``natter gateway|auth|chat|notify`` are what compose, Kubernetes and ``natter up`` run, once per
process and replica. They need none of the operator tooling: typer and rich (help screens,
progress bars), the launcher behind ``natter up``, the benchmark tool. :func:`main` recognises
them from ``argv`` with the standard library's ``argparse`` and imports only the service; every
other command (and ``--help`` anywhere) goes to the typer app in :mod:`natter.cli`.
docs/benchmarks.md ("service processes") has the start time and memory this saves.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

#: The process commands and their one-line help (kept in step with natter/cli.py's commands).
SERVICE_COMMANDS = {
    "gateway": "Run one WebSocket/HTTP gateway process.",
    "auth": "Run one auth_service replica.",
    "chat": "Run one chat_service replica.",
    "notify": "Run one notify_service replica.",
}


def run_service(command: str, args: Sequence[str]) -> None:
    """Run the process ``command`` (a key of :data:`SERVICE_COMMANDS`) with its options.

    ``gateway`` takes ``--host`` (default 127.0.0.1) and ``--port`` (default 8000); the services
    take no options (their settings are environment variables, docs/deploy.md).

    Raises:
        SystemExit: 2 with argparse's message for an unknown option or a bad value.
    """
    parser = argparse.ArgumentParser(prog=f"natter {command}", description=SERVICE_COMMANDS[command])
    if command == "gateway":
        parser.add_argument("--host", default="127.0.0.1", help="Interface to listen on.")
        parser.add_argument("--port", type=int, default=8000, help="TCP port to listen on.")
    options = parser.parse_args(list(args))
    if command == "gateway":
        from gateway.main import serve

        serve(host=options.host, port=options.port)
        return
    import uvloop

    if command == "auth":
        from auth_service.main import serve as serve_auth

        uvloop.run(serve_auth())
    elif command == "chat":
        from chat_service.main import serve as serve_chat

        uvloop.run(serve_chat())
    else:
        from notify_service.main import serve as serve_notify

        uvloop.run(serve_notify())


def main(argv: Sequence[str] | None = None) -> None:
    """The ``natter`` console script and ``python -m natter``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SERVICE_COMMANDS and not {"--help", "-h"} & set(args[1:]):
        run_service(args[0], args[1:])
        return
    from natter.cli import app

    app(args=args, prog_name="natter")
