"""``natter bench``: ``run`` one scenario against one target, ``compare`` natter with the
references (and print natter's ratios), ``plot`` result files into one PNG.

Every run is bounded (``--duration``, counts), targets loopback only and stops by itself.
Results are JSON (``--out``) with a PNG beside it (``--plot``, needs matplotlib: the ``bench``
extra). docs/benchmarks.md explains the method and the fields.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from natter.bench.report import compare_document, compare_table, run_table, write_json
from natter.bench.runner import BenchError, Run
from natter.bench.spec import RunParams, Scenario, TargetKind
from natter.bench.targets import TargetError, check_available

app = typer.Typer(help="Benchmarks: natter vs a FastAPI ConnectionManager and a python-socketio server.")
logger = logging.getLogger(__name__)

_SCENARIO = typer.Option(Scenario.fanout, "--scenario", help="fanout | rooms | saturation | idle | connect.")
_MEMBERS = typer.Option(100, "--members", help="fanout/saturation: sockets in the room (one of them sends).")
_ROOMS = typer.Option(250, "--rooms", help="rooms: number of rooms.")
_ROOM_SIZE = typer.Option(4, "--room-size", help="rooms: sockets per room (all send).")
_RATE = typer.Option(
    None, "--rate", help="Messages/s per sender (fanout 20, rooms 1); saturation: the first step's rate."
)
_DURATION = typer.Option(10.0, "--duration", help="Seconds of each measured phase (idle: hold time).")
_CONNECTIONS = typer.Option(1000, "--connections", help="idle: authenticated sockets to hold open.")
_WORKERS = typer.Option(2, "--workers", help="Load-generator processes.")
_USERS = typer.Option(20, "--users", help="natter accounts registered for the run (sockets share them).")
_GRACE = typer.Option(5.0, "--grace", help="Seconds after a phase that deliveries may still arrive.")
_WARMUP = typer.Option(
    2.0, "--warmup", help="Seconds of unmeasured sending at the first rate before measuring (0: none)."
)
_STEP = typer.Option(1.5, "--step-factor", help="saturation: rate multiplier between steps.")
_STEPS = typer.Option(8, "--max-steps", help="saturation: at most this many steps.")
_P99 = typer.Option(100.0, "--p99-limit-ms", help="saturation: a step fails when p99 exceeds this.")
_CONCURRENCY = typer.Option(100, "--connect-concurrency", help="Sockets connecting at once during setup.")
_CHURN = typer.Option(16, "--churn-concurrency", help="connect: connect/auth/close loops running at once.")
_SYNC = typer.Option(
    True, "--nats-sync/--no-nats-sync", help="natter: nats-server with sync_interval: always (as natter up)."
)
_GATEWAYS = typer.Option(
    1,
    "--gateways",
    help="natter: gateway processes (fanout, rooms, saturation); worker i connects to gateway i mod N.",
)
_QUIET = typer.Option(
    0.0,
    "--quiet-wait",
    help="Wait up to this many seconds for other work on the machine to stop (< 30% of a core).",
)
_REACTIONS = typer.Option(
    0.0,
    "--reactions",
    help="natter: share of sends (0..0.5) that are reactions to the sender's latest message (v2 events).",
)
_CONNECT_JOIN = typer.Option(
    False, "--join/--no-join", help="connect: each connect also joins a room before closing."
)
_PLOT = typer.Option(True, "--plot/--no-plot", help="Also write a PNG beside the JSON (needs matplotlib).")
_KEEP = typer.Option(False, "--keep-workdir", help="Keep the run's temp dir (NATS store, logs).")


def _out_console() -> Console:
    """Tables go to stdout; a pipe or file gets 160 columns instead of folding at 80."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=160)
    return console


def _params(scenario: Scenario, target: TargetKind, **values: Any) -> RunParams:
    params = RunParams(scenario=scenario, target=target, **values)
    try:
        params.validate()
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    return params


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into ``SystemExit`` so a killed run still stops what it started (the
    ``finally`` blocks of :class:`~natter.bench.runner.Run` run)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _execute(params: RunParams, console: Console, keep: bool) -> dict[str, Any]:
    with (
        _stop_on_sigterm(),
        Progress(
            TextColumn("[bold]{task.fields[target]}[/bold] {task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task("", total=1.0, target=params.target.value)

        def report(description: str, fraction: float | None) -> None:
            progress.update(task, description=description, completed=fraction or 0.0)

        return Run(params, progress=report, keep_workdir=keep).execute()


def _plot(path: Path, documents: list[dict[str, Any]], console: Console) -> None:
    try:
        from natter.bench.plot import plot_documents
    except ImportError:
        console.print("[yellow]matplotlib is not installed (pip install 'natter[bench]'): no PNG[/yellow]")
        return
    plot_documents(documents, path)
    console.print(f"plot: {path}")


@app.command("history")
def history(
    messages: int = typer.Option(
        2000, "--messages", min=60, max=100_000, help="Messages seeded in the room."
    ),
    clients: int = typer.Option(20, "--clients", min=1, max=500, help="Sockets reading pages at once."),
    duration: float = typer.Option(10.0, "--duration", min=1.0, max=600.0, help="Seconds of reading."),
    limit: int = typer.Option(50, "--limit", min=1, max=100, help="Messages per page."),
    nats_sync: bool = _SYNC,
    out: Path | None = typer.Option(None, "--out", help="Also write the result JSON here."),
    keep_workdir: bool = _KEEP,
) -> None:
    """Materialised history pages (edits and reactions applied) under concurrent readers:
    pages/s and p50/p99 latency (issue 11, docs/benchmarks.md "history")."""
    from natter.bench.history import HistoryParams, run_history

    result = run_history(
        HistoryParams(
            messages=messages, clients=clients, duration=duration, limit=limit, nats_sync=nats_sync
        ),
        keep_workdir=keep_workdir,
    )
    text = json.dumps(result, indent=2)
    typer.echo(text)
    if out is not None:
        out.write_text(text + "\n")


@app.command("run")
def run(
    scenario: Scenario = _SCENARIO,
    target: TargetKind = typer.Option(TargetKind.natter, "--target", help="natter | fastapi | socketio."),
    out: Path = typer.Option(Path("bench-result.json"), "--out", help="Where to write the result JSON."),
    members: int = _MEMBERS,
    rooms: int = _ROOMS,
    room_size: int = _ROOM_SIZE,
    rate: float | None = _RATE,
    duration: float = _DURATION,
    connections: int = _CONNECTIONS,
    workers: int = _WORKERS,
    users: int = _USERS,
    grace: float = _GRACE,
    warmup: float = _WARMUP,
    step_factor: float = _STEP,
    max_steps: int = _STEPS,
    p99_limit_ms: float = _P99,
    connect_concurrency: int = _CONCURRENCY,
    churn_concurrency: int = _CHURN,
    nats_sync: bool = _SYNC,
    gateways: int = _GATEWAYS,
    quiet_wait: float = _QUIET,
    reactions: float = _REACTIONS,
    connect_join: bool = _CONNECT_JOIN,
    plot: bool = _PLOT,
    keep_workdir: bool = _KEEP,
) -> None:
    """Run one scenario against one target; write the result JSON (and a PNG)."""
    console = Console(stderr=True)
    params = _params(
        scenario,
        target,
        members=members,
        rooms=rooms,
        room_size=room_size,
        rate=rate,
        duration=duration,
        connections=connections,
        workers=workers,
        users=users,
        grace=grace,
        warmup=warmup,
        step_factor=step_factor,
        max_steps=max_steps,
        p99_limit_ms=p99_limit_ms,
        connect_concurrency=connect_concurrency,
        churn_concurrency=churn_concurrency,
        nats_sync_always=nats_sync,
        quiet_wait=quiet_wait,
        gateways=gateways,
        reactions=reactions,
        connect_join=connect_join,
    )
    try:
        check_available(target)
        result = _execute(params, console, keep_workdir)
    except (BenchError, TargetError) as error:
        console.print(f"natter bench: {error}", style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    write_json(out, result)
    _out_console().print(run_table(result))
    console.print(f"result: {out}")
    if plot:
        _plot(out.with_suffix(".png"), [result], console)


@app.command("compare")
def compare(
    scenario: Scenario = _SCENARIO,
    targets: str = typer.Option("natter,fastapi,socketio", "--targets", help="Comma-separated targets."),
    out: Path = typer.Option(Path("bench-compare.json"), "--out", help="Where to write the comparison JSON."),
    members: int = _MEMBERS,
    rooms: int = _ROOMS,
    room_size: int = _ROOM_SIZE,
    rate: float | None = _RATE,
    duration: float = _DURATION,
    connections: int = _CONNECTIONS,
    workers: int = _WORKERS,
    users: int = _USERS,
    grace: float = _GRACE,
    warmup: float = _WARMUP,
    step_factor: float = _STEP,
    max_steps: int = _STEPS,
    p99_limit_ms: float = _P99,
    connect_concurrency: int = _CONCURRENCY,
    churn_concurrency: int = _CHURN,
    nats_sync: bool = _SYNC,
    gateways: int = _GATEWAYS,
    quiet_wait: float = _QUIET,
    reactions: float = _REACTIONS,
    connect_join: bool = _CONNECT_JOIN,
    floor: bool = typer.Option(
        True,
        "--floor/--no-floor",
        help="rooms: also measure JetStream's publish+PubAck floor at the same rate and shard count.",
    ),
    plot: bool = _PLOT,
    keep_workdir: bool = _KEEP,
) -> None:
    """Run the scenario on each target back to back and print natter's ratios to the references."""
    console = Console(stderr=True)
    try:
        kinds = [TargetKind(name.strip()) for name in targets.split(",") if name.strip()]
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--targets") from None
    if not kinds:
        raise typer.BadParameter("give at least one target", param_hint="--targets")
    values: dict[str, Any] = dict(
        members=members,
        rooms=rooms,
        room_size=room_size,
        rate=rate,
        duration=duration,
        connections=connections,
        workers=workers,
        users=users,
        grace=grace,
        warmup=warmup,
        step_factor=step_factor,
        max_steps=max_steps,
        p99_limit_ms=p99_limit_ms,
        connect_concurrency=connect_concurrency,
        churn_concurrency=churn_concurrency,
        nats_sync_always=nats_sync,
        quiet_wait=quiet_wait,
        gateways=gateways,
        reactions=reactions,
        connect_join=connect_join,
    )
    results: dict[str, dict[str, Any]] = {}
    try:
        for kind in kinds:
            check_available(kind)
        for kind in kinds:
            # --gateways scales natter out; a reference is one process by design (RunParams).
            # --gateways and --reactions are natter's.
            natter = kind is TargetKind.natter
            own = {
                **values,
                "gateways": values["gateways"] if natter else 1,
                "reactions": values["reactions"] if natter else 0.0,
            }
            results[kind.value] = _execute(_params(scenario, kind, **own), console, keep_workdir)
            console.print(f"{kind.value}: done")
    except (BenchError, TargetError) as error:
        console.print(f"natter bench: {error}", style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    params = {"scenario": scenario.value, **values}
    measured_floor = None
    if scenario is Scenario.rooms and floor and TargetKind.natter in kinds:
        from natter.bench.floor import floor as jetstream_floor
        from natter.bench.targets import ROOM_SHARDS

        console.print("jetstream floor: publish + PubAck at the same rate and shard count")
        measured_floor = jetstream_floor(
            rate=rooms * room_size * (rate if rate is not None else 1.0),
            seconds=duration,
            streams=ROOM_SHARDS,
            sync=nats_sync,
        )
    document = compare_document(results, params, measured_floor)
    write_json(out, document)
    _out_console().print(compare_table(document))
    console.print(f"result: {out}")
    if plot:
        _plot(out.with_suffix(".png"), [document], console)


@app.command("plot")
def plot(
    files: list[Path] = typer.Argument(..., help="Result JSON files of `run` or `compare`."),
    out: Path = typer.Option(Path("bench.png"), "--out", help="PNG to write."),
) -> None:
    """Draw several result files into one PNG (one row per file)."""
    import json

    console = Console(stderr=True)
    documents = []
    for file in files:
        try:
            documents.append(json.loads(file.read_text()))
        except (OSError, ValueError) as error:
            raise typer.BadParameter(f"{file}: {error}") from None
    _plot(out, documents, console)
