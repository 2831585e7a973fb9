"""Start time and memory of one natter process of each kind (issue 12, item 6).

Starts a nats-server with natter's users and provisions it, then, ``--runs`` times for each of
``gateway``, ``auth``, ``chat`` and ``notify``: spawns the process exactly as ``natter up`` and
compose do (``python -m natter <service>``), measures the wall time until it is ready (a micro
service answers ``$SRV.PING.<name>``; the gateway answers ``GET /health`` with 200), reads its
resident memory at that moment (``VmRSS``, ``/proc/<pid>/status``) and whether it loaded any of
the modules a service has no use for (``-X importtime``: the bench tool, the launcher, typer,
rich), then stops it. Prints one Markdown row per kind with the median of the runs.

    .venv/bin/python benchmarks/service_footprint.py --runs 3

Loopback only, bounded: every wait has a timeout and every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from natter.credentials import NatsCredentials
from natter.launcher import (
    ManagedProcess,
    free_port,
    nats_server_process,
    provision,
    service_process,
    wait_for_port,
    wait_services,
)
from shared.nats_auth import OPERATOR

KINDS = ("gateway", "auth", "chat", "notify")
#: Modules a service process should never load (the CLI's and the operator tools' weight).
UNWANTED = ("natter.bench", "natter.launcher", "natter.up", "typer", "rich")
READY_TIMEOUT = 60.0


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def imported(log: Path) -> set[str]:
    """Top-level-qualified module names from a ``-X importtime`` log."""
    names = set()
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def wait_ready(kind: str, nats_url: str, port: int | None) -> None:
    if kind == "gateway":
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
        raise TimeoutError("gateway not healthy")
    wait_services(nats_url, (kind,), timeout=READY_TIMEOUT)


def measure(kind: str, tmp: Path, nats_url: str, creds: NatsCredentials, run: int) -> dict[str, object]:
    port = free_port() if kind == "gateway" else None
    log = tmp / f"{kind}-{run}.log"
    process: ManagedProcess = service_process(
        kind, nats_url=nats_url_plain(nats_url), port=port, log_path=log, credentials=creds
    )
    process.argv[1:1] = ["-X", "importtime"]
    started = time.monotonic()
    process.start()
    try:
        wait_ready(kind, nats_url, port)
        ready_s = time.monotonic() - started
        rss = rss_kib(process.pid)
    finally:
        process.stop(grace=10)
    modules = imported(log)
    unwanted = sorted(m for m in modules if m.startswith(UNWANTED))
    return {"ready_s": ready_s, "rss_kib": rss, "modules": len(modules), "unwanted": unwanted}


def nats_url_plain(url: str) -> str:
    """``nats://user:pw@host:port`` -> ``nats://host:port`` (services log in with their own tier)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


def _package(module: str) -> str:
    """``natter.bench.cli`` -> ``natter.bench``; ``rich.console`` -> ``rich``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "natter" else parts[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per kind (median reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="natter-footprint-") as name:
        tmp = Path(name)
        port = free_port()
        creds = NatsCredentials.generate()
        nats = nats_server_process(
            port=port, store_dir=tmp / "nats", log_path=tmp / "nats.log", authorization=creds.authorization()
        )
        nats.start()
        try:
            wait_for_port(port)
            plain = f"nats://127.0.0.1:{port}"
            provision(plain, login=creds.login(OPERATOR), replicas=1, retention_days=0, room_shards=4)
            operator_url = creds.url(OPERATOR, plain)
            # auth first: the gateway needs its keys to become healthy.
            order = ("auth", "chat", "notify", "gateway")
            results: dict[str, list[dict[str, object]]] = {kind: [] for kind in order}
            for run in range(args.runs):
                for kind in order:
                    keep_auth = None
                    if kind == "gateway":
                        keep_auth = service_process("auth", nats_url=plain, credentials=creds)
                        keep_auth.start()
                        wait_services(operator_url, ("auth",), timeout=READY_TIMEOUT)
                    try:
                        results[kind].append(measure(kind, tmp, operator_url, creds, run))
                    finally:
                        if keep_auth is not None:
                            keep_auth.stop(grace=10)
        finally:
            nats.stop(grace=10)
    print("| process | ready (median) | RSS at ready (median) | modules loaded | CLI/bench modules loaded |")  # noqa: T201 - a command-line report
    print("|---|---|---|---|---|")  # noqa: T201
    for kind in KINDS:
        rows = results[kind]
        ready = statistics.median(float(r["ready_s"]) for r in rows)  # type: ignore[arg-type]
        rss = statistics.median(int(r["rss_kib"]) for r in rows)  # type: ignore[call-overload]
        modules = statistics.median(int(r["modules"]) for r in rows)  # type: ignore[call-overload]
        unwanted = sorted({m for r in rows for m in r["unwanted"]})  # type: ignore[attr-defined]
        shown = ", ".join(sorted({_package(m) for m in unwanted})) or "none"
        print(f"| `natter {kind}` | {ready * 1000:.0f} ms | {rss / 1024:.1f} MiB | {modules:.0f} | {shown} |")  # noqa: T201


if __name__ == "__main__":
    main()
