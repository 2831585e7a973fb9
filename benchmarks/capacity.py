"""How many sends per second one chat_service replica stores (docs/scaling.md, "Measured here").

Starts its own nats-server (JetStream, file storage, ``sync_interval: always`` as ``natter up``
runs it, or the default fsync interval with ``--no-sync``) and ``--replicas`` chat_service
processes on free loopback ports, creates ``--rooms`` rooms with ``chat.join``, then for
``--duration`` seconds keeps ``--concurrency`` ``chat.send`` requests in flight straight over NATS,
as gateways send them (no gateway, no WebSocket: this isolates the chat tier and JetStream).
Prints one JSON document: sends/s, latency percentiles, errors, and the CPU used by each process.
Everything it starts is stopped at the end; it runs at most ``--duration`` + ~15 s.

    .venv/bin/python benchmarks/capacity.py --replicas 1 --concurrency 32 --rooms 64 --duration 10
    .venv/bin/python benchmarks/capacity.py --replicas 2 --concurrency 32 --rooms 64 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from natter.launcher import (
    ManagedProcess,
    free_port,
    nats_server_process,
    provision,
    service_process,
    stop_together,
    wait_for_port,
)
from shared.errors import ProtocolError
from shared.nats_client import request

logger = logging.getLogger("capacity")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (Linux ``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def wait_replicas(url: str, count: int, timeout: float = 30.0) -> None:
    nc = await nats.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await nc.publish("$SRV.PING.chat", b"", reply=inbox)
            ids = set()
            try:
                while len(ids) < count:
                    msg = await sub.next_msg(timeout=0.3)
                    if msg.data:
                        ids.add(json.loads(msg.data)["id"])
            except (TimeoutError, nats.errors.TimeoutError):
                pass
            await sub.unsubscribe()
            if len(ids) >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count - len(ids)} chat replicas not ready")
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def measure(url: str, args: argparse.Namespace, pids: dict[str, int]) -> dict[str, Any]:
    nc = await nats.connect(url)
    user_id = uuid.uuid4().hex
    rooms = [f"cap-{uuid.uuid4().hex[:8]}-{i}" for i in range(args.rooms)]
    for room in rooms:
        body = {"room": room, "user_id": user_id, "username": "capacity", "gateway_id": "capacity"}
        await request(nc, "chat.join", json.dumps(body).encode(), timeout=10)
    text = "x" * args.message_chars
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = 0.0

    async def worker(index: int) -> None:
        room = rooms[index % len(rooms)]
        while time.monotonic() < stop_at:
            body = {
                "room": room,
                "user_id": user_id,
                "username": "capacity",
                "message": text,
                "client_msg_id": uuid.uuid4().hex,
            }
            started = time.perf_counter()
            try:
                await request(nc, "chat.send", json.dumps(body).encode(), timeout=5)
            except ProtocolError as error:
                errors[error.code.value] = errors.get(error.code.value, 0) + 1
                continue
            latencies.append(time.perf_counter() - started)

    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    wall_started = time.monotonic()
    stop_at = wall_started + args.duration
    await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    wall = time.monotonic() - wall_started
    cpu = {name: round(100 * (cpu_seconds(pid) - cpu_before[name]) / wall, 1) for name, pid in pids.items()}
    await nc.close()
    chat_cpu = sum(v for k, v in cpu.items() if k.startswith("chat")) / 100
    return {
        "sends": len(latencies),
        "sends_per_s": round(len(latencies) / wall, 1),
        "sends_per_chat_cpu_second": round(len(latencies) / wall / chat_cpu, 1) if chat_cpu else None,
        "latency_ms": {
            "p50": round(1000 * (percentile(latencies, 0.5) or 0), 2),
            "p99": round(1000 * (percentile(latencies, 0.99) or 0), 2),
        },
        "errors": errors,
        "cpu_pct": cpu,
        "wall_s": round(wall, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=1, help="chat_service processes (1..8)")
    parser.add_argument("--concurrency", type=int, default=32, help="chat.send requests in flight")
    parser.add_argument("--rooms", type=int, default=64, help="rooms the senders spread over")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (max 60)")
    parser.add_argument("--message-chars", type=int, default=100, help="characters per message")
    parser.add_argument(
        "--sync",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="nats-server with sync_interval: always (default, as natter up)",
    )
    args = parser.parse_args()
    if not 1 <= args.replicas <= 8 or not 0 < args.duration <= 60 or not 1 <= args.concurrency <= 512:
        parser.error("--replicas 1..8, --duration 0..60, --concurrency 1..512")
    logging.basicConfig(level=logging.WARNING)
    started: list[ManagedProcess] = []
    with tempfile.TemporaryDirectory(prefix="natter-capacity-") as tmp:
        port = free_port()
        server = nats_server_process(
            port=port, store_dir=Path(tmp) / "nats", log_path=Path(tmp) / "nats.log", sync_always=args.sync
        )
        server.die_with_parent = True
        try:
            started.append(server.start())
            wait_for_port(port)
            url = f"nats://127.0.0.1:{port}"
            provision(url)  # streams are the operator's to create (an open NATS here)
            for index in range(args.replicas):
                chat = service_process(
                    "chat", nats_url=url, log_path=Path(tmp) / f"chat-{index}.log", index=index
                )
                chat.die_with_parent = True
                started.append(chat.start())
            asyncio.run(wait_replicas(url, args.replicas))
            pids = {process.name: process.pid for process in started}
            result = asyncio.run(measure(url, args, pids))
        finally:
            stop_together(started[1:])
            stop_together(started[:1])
    document = {
        "schema": "natter-capacity/1",
        "what": "chat.send over NATS, no gateway",
        "params": vars(args),
        "machine": {
            "nproc": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "result": result,
    }
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
