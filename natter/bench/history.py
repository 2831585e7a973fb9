"""``natter bench history``: materialised history pages under load (issue 11 item 10).

One room is seeded with ``messages`` messages, a reaction on every second one and an edit on
every fifth (so a page of 50 carries about 25 reactions and 10 edits, and the room's log holds
about 1.7 entries per message). Then ``clients`` sockets each ask, one after the other for
``duration`` seconds, for a page of ``limit`` messages ``before`` a random seq (the first one
without ``before``). Reported: pages, pages/s, p50/p99/max latency in ms (request sent to
``history`` answer received), and how many answers were not a full page of materialised
messages (an error, a missing ``reactions`` field). Loopback only, bounded in time and count.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets

from natter.bench.spec import TargetKind
from natter.bench.stats import percentile
from natter.bench.targets import remove_workdir, start_target


@dataclass(frozen=True)
class HistoryParams:
    """A run: ``messages`` seeded, ``clients`` readers for ``duration`` seconds, pages of ``limit``."""

    messages: int = 2000
    clients: int = 20
    duration: float = 10.0
    limit: int = 50
    nats_sync: bool = True


class _Socket:
    """One socket with requests matched to answers by ``id`` (several may be in flight)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.counter = 0
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for raw in self.conn:
            answer = json.loads(raw)
            future = self.waiting.pop(str(answer.get("id")), None)
            if future is not None and not future.done():
                future.set_result(answer)

    async def request(self, frame: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        self.counter += 1
        request_id = f"h{self.counter}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = future
        await self.conn.send(json.dumps({**frame, "id": request_id}))
        return await asyncio.wait_for(future, timeout)

    async def close(self) -> None:
        await self.conn.close()
        self.reader.cancel()


async def _open(url: str, token: str) -> _Socket:
    conn = await websockets.connect(f"{url}?token={token}", max_size=None, open_timeout=10)
    for _ in range(2):  # auth_success, notifications
        await conn.recv()
    return _Socket(conn)


async def _seed(sock: _Socket, room: str, messages: int) -> int:
    """Store the room's messages with reactions and edits; returns the last seq."""
    await sock.request({"type": "join", "room": room})
    last = 0
    window = 32  # requests in flight
    pending: list[asyncio.Task[dict[str, Any]]] = []
    seqs: list[int] = []
    for n in range(messages):
        frame = {
            "type": "chat_message",
            "room": room,
            "message": f"history bench {n}",
            "client_msg_id": uuid.uuid4().hex,
        }
        pending.append(asyncio.ensure_future(sock.request(frame, timeout=30)))
        if len(pending) >= window:
            seqs += [int(a["seq"]) for a in await asyncio.gather(*pending)]
            pending = []
    seqs += [int(a["seq"]) for a in await asyncio.gather(*pending)]
    for index, seq in enumerate(seqs):
        if index % 2 == 0:
            last = max(
                last,
                int(
                    (await sock.request({"type": "react", "room": room, "target": seq, "emoji": "+1"}))["seq"]
                ),
            )
        if index % 5 == 0:
            edit = {"type": "edit", "room": room, "target": seq, "message": f"history bench {index} (edited)"}
            last = max(last, int((await sock.request(edit))["seq"]))
    return max(last, max(seqs, default=0))


async def _reader(
    url: str, token: str, room: str, top: int, params: HistoryParams, until: float
) -> tuple[list[float], int]:
    sock = await _open(url, token)
    latencies: list[float] = []
    bad = 0
    rng = random.Random()
    first = True
    try:
        while time.monotonic() < until:
            frame: dict[str, Any] = {"type": "history", "room": room, "limit": params.limit}
            if not first:
                frame["before"] = rng.randint(params.limit + 1, max(params.limit + 2, top))
            first = False
            started = time.perf_counter()
            answer = await sock.request(frame)
            latencies.append((time.perf_counter() - started) * 1000)
            messages = answer.get("messages")
            if answer.get("type") != "history" or not messages or any("reactions" not in m for m in messages):
                bad += 1
    finally:
        await sock.close()
    return latencies, bad


async def _run(params: HistoryParams, url: str, tokens: list[str]) -> dict[str, Any]:
    room = f"history-{uuid.uuid4().hex[:8]}"
    seeder = await _open(url, tokens[0])
    seed_started = time.monotonic()
    top = await _seed(seeder, room, params.messages)
    seed_s = time.monotonic() - seed_started
    await seeder.close()
    until = time.monotonic() + params.duration
    started = time.monotonic()
    results = await asyncio.gather(
        *(_reader(url, tokens[i % len(tokens)], room, top, params, until) for i in range(params.clients))
    )
    elapsed = time.monotonic() - started
    latencies = sorted(value for lat, _ in results for value in lat)
    return {
        "scenario": "history",
        "messages": params.messages,
        "room_last_seq": top,
        "seed_seconds": round(seed_s, 2),
        "clients": params.clients,
        "limit": params.limit,
        "pages": len(latencies),
        "pages_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(latencies, 0.5), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(latencies[-1], 2) if latencies else None,
        "bad_answers": sum(bad for _, bad in results),
    }


def run_history(params: HistoryParams, *, keep_workdir: bool = False) -> dict[str, Any]:
    """Start a natter stack (one of each process, loopback), run the scenario, stop it.

    Raises:
        natter.bench.targets.TargetError: the stack did not start.
    """
    workdir = Path(tempfile.mkdtemp(prefix="natter-bench-history-"))
    target = start_target(
        TargetKind.natter,
        workdir=workdir,
        users=max(1, min(params.clients, 20)),
        run_id=uuid.uuid4().hex[:6],
        nats_sync=params.nats_sync,
    )
    try:
        return asyncio.run(_run(params, target.url, target.tokens))
    finally:
        target.stop()
        if not keep_workdir:
            remove_workdir(workdir)
