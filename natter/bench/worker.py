"""One load-generator process: holds many sockets, sends at fixed rates, counts deliveries.

The parent (:mod:`natter.bench.runner`) drives it over a ``multiprocessing`` pipe with
commands, each answered once:

- ``("connect",)`` -> ``("connected", {...})``: open, authenticate and join every planned socket.
- ``("phase", spec)`` -> ``("sent", {...})``: from ``spec["start_at"]`` (Unix seconds) for
  ``spec["duration"]`` seconds each sender sends ``spec["rate"]`` messages/s (open loop: a late
  send is sent at once, never skipped), then waits up to ``spec["ack_timeout"]`` for acks.
- ``("expect", n, grace)`` -> ``("result", {...})``: wait until ``n`` distinct deliveries of the
  phase arrived at this worker's sockets, or ``grace`` seconds passed; report the counts and the
  latencies (``array('q')`` bytes, nanoseconds).
- ``("churn", spec)`` -> ``("churned", {...})``: connect, authenticate, close, repeatedly, with
  ``spec["concurrency"]`` loops for ``spec["duration"]`` seconds.
- ``("close",)`` -> ``("closed", {})``: close every socket and exit.

Every wait is bounded; the parent also bounds its waits and terminates a silent worker.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from array import array
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from natter.bench.clients import ClientError, Sink, SioClient, WsClient, marker, reaction_marker
from natter.bench.spec import SocketPlan, is_reaction
from natter.bench.stats import message_key

logger = logging.getLogger(__name__)

#: Seconds one socket may take to connect+authenticate, or to join.
OPEN_TIMEOUT = 30.0


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker holds: its sockets, the tokens, where to connect and how.

    ``protocol`` is ``"ws"`` (natter frames over :mod:`natter.bench.rawws`) or ``"socketio"``;
    ``url`` is the WebSocket URL (``ws://host:port/ws``) or, for Socket.IO, the server's
    ``http://host:port``.
    """

    index: int
    protocol: str
    url: str
    tokens: list[str]
    sockets: list[SocketPlan]
    connect_concurrency: int


class Worker:
    """The sockets of one worker process and the commands acting on them."""

    def __init__(self, plan: WorkerPlan) -> None:
        self.plan = plan
        self.sink = Sink()
        self.clients: list[tuple[SocketPlan, WsClient | SioClient]] = []
        self._http: Any = None

    async def _session(self) -> Any:
        if self._http is None:
            import aiohttp

            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self._http

    async def new_client(self, slot: int) -> WsClient | SioClient:
        if self.plan.protocol == "socketio":
            return SioClient(slot, self.sink, await self._session())
        return WsClient(slot, self.sink)

    # --- connect ---------------------------------------------------------------------------
    async def connect(self) -> dict[str, Any]:
        """Open every planned socket (bounded concurrency); join its room if it has one."""
        started = time.monotonic()
        gate = asyncio.Semaphore(self.plan.connect_concurrency)
        failures: dict[str, int] = {}
        opened: list[tuple[SocketPlan, WsClient | SioClient]] = []

        async def one(slot: int, socket: SocketPlan) -> None:
            async with gate:
                client = await self.new_client(slot)
                try:
                    await client.open(self.plan.url, self.plan.tokens[socket.user], OPEN_TIMEOUT)
                    client.start_reader()
                    if socket.room is not None:
                        await client.join(socket.room, OPEN_TIMEOUT)
                except ClientError as error:
                    failures[error.reason] = failures.get(error.reason, 0) + 1
                    await client.close()
                    return
                opened.append((socket, client))

        await asyncio.gather(*(one(slot, socket) for slot, socket in enumerate(self.plan.sockets)))
        opened.sort(key=lambda pair: pair[0].index)
        self.clients = opened
        members: dict[str, int] = {}
        for socket, _ in opened:
            if socket.room is not None:
                members[socket.room] = members.get(socket.room, 0) + 1
        return {
            "planned": len(self.plan.sockets),
            "connected": len(opened),
            "failures": failures,
            "members": members,
            "senders": sorted(s.sender_id for s, _ in opened if s.sender_id is not None),
            "seconds": round(time.monotonic() - started, 3),
        }

    # --- messaging -------------------------------------------------------------------------
    async def phase(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Send for one phase, then wait for acks; report what was sent and acked."""
        phase, rate, duration = int(spec["phase"]), float(spec["rate"]), float(spec["duration"])
        reactions = float(spec.get("reactions", 0.0))
        # Reaction markers carry microseconds since the phase's start_at (an emoji is at most 32
        # characters, too short for a full time_ns); every worker knows start_at.
        base_us = int(float(spec["start_at"]) * 1e6)
        self.sink.reset(phase, base_us)
        senders = [(s, c) for s, c in self.clients if s.sender_id is not None and s.room is not None]
        for _, client in senders:
            client.sender.reset()
        loop = asyncio.get_running_loop()
        base = loop.time() + (float(spec["start_at"]) - time.time())
        end = base + duration
        spread = bool(spec.get("spread", False))

        async def send_loop(socket: SocketPlan, client: WsClient | SioClient) -> None:
            assert socket.sender_id is not None and socket.room is not None
            interval = 1.0 / rate
            offset = random.uniform(0, interval) if spread else 0.0
            state, counter = client.sender, 0
            while True:
                due = base + offset + counter * interval
                if due >= end:
                    return
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    state.lag_ns.append(int(-delay * 1e9))
                now_ns = time.time_ns()
                cmid = f"{phase}-{socket.sender_id}-{counter}"
                target = state.last_message_seq
                try:
                    if target is not None and is_reaction(counter, reactions):
                        emoji = reaction_marker(now_ns // 1000 - base_us, phase, socket.sender_id, counter)
                        await client.send_react(socket.room, target, emoji, counter, cmid)
                        state.reactions += 1
                    else:
                        text = marker(now_ns, phase, socket.sender_id, counter)
                        await client.send_chat(socket.room, text, counter, cmid)
                except Exception:  # the socket closed: the rest of this sender's messages are not sent
                    state.errors["send_failed"] = state.errors.get("send_failed", 0) + 1
                    return
                state.sent += 1
                counter += 1

        await asyncio.gather(*(send_loop(s, c) for s, c in senders))
        ack_deadline = loop.time() + float(spec["ack_timeout"])
        # Acks arrive in many sockets' data_received: a bounded poll instead of an event each.
        while loop.time() < ack_deadline and any(c.sender.outstanding() > 0 for _, c in senders):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        acked: array[int] = array("q")
        errors: dict[str, int] = {}
        sent = unacked = reactions_sent = 0
        lag: array[int] = array("q")
        for socket, client in senders:
            assert socket.sender_id is not None
            state = client.sender
            sent += state.sent
            reactions_sent += state.reactions
            unacked += max(0, state.outstanding())
            acked.extend(message_key(socket.sender_id, n) for n in sorted(state.acked))
            for code, count in state.errors.items():
                errors[code] = errors.get(code, 0) + count
            lag.extend(state.lag_ns)
        return {
            "senders": len(senders),
            "sent": sent,
            "reactions": reactions_sent,
            "acked": acked.tobytes(),
            "unacked": unacked,
            "errors": errors,
            "lag_ns": lag.tobytes(),
        }

    async def expect(self, expected: int, grace: float) -> dict[str, Any]:
        """Wait for ``expected`` distinct deliveries (at most ``grace`` s); report the counts."""
        sink = self.sink
        sink.expected = expected
        if sink.unique < expected:
            try:
                await asyncio.wait_for(sink.done.wait(), grace)
            except TimeoutError:
                pass
        return {
            "unique": sink.unique,
            "duplicates": sink.duplicates,
            "late": sink.late,
            "foreign": sink.foreign,
            "per_msg": dict(sink.per_msg),
            "latencies": sink.latencies.tobytes(),
            "first_ns": sink.first_ns,
            "last_ns": sink.last_ns,
            "closed": dict(sink.closed),
        }

    # --- connect churn ---------------------------------------------------------------------
    async def churn(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Connect + authenticate + close in ``spec["concurrency"]`` loops until the end time."""
        loop = asyncio.get_running_loop()
        start = loop.time() + (float(spec["start_at"]) - time.time())
        end = start + float(spec["duration"])
        max_connects = int(spec["max_connects"])
        latencies: array[int] = array("q")
        failures: dict[str, int] = {}
        tokens = self.plan.tokens
        rooms: list[str] = list(spec.get("rooms") or [])
        loops = int(spec["concurrency"])
        counter = {"next": 0, "done": 0}
        delay = start - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

        async def loop_once(lane: int) -> None:
            while loop.time() < end and counter["done"] < max_connects:
                n = counter["next"]
                counter["next"] += 1
                client = await self.new_client(-1)
                t0 = time.perf_counter_ns()
                try:
                    await client.open(self.plan.url, tokens[(self.plan.index + n) % len(tokens)], 10.0)
                    if rooms:
                        await client.join(rooms[(self.plan.index * loops + lane) % len(rooms)], 10.0)
                except ClientError as error:
                    await client.close()
                    failures[error.reason] = failures.get(error.reason, 0) + 1
                    await asyncio.sleep(0.05)  # a refusing server is not hammered in a tight loop
                    continue
                latencies.append(time.perf_counter_ns() - t0)
                counter["done"] += 1
                await client.close()

        await asyncio.gather(*(loop_once(lane) for lane in range(loops)))
        return {
            "connects": len(latencies),
            "failures": failures,
            "latencies": latencies.tobytes(),
            "seconds": round(loop.time() - start, 3),
        }

    async def close(self) -> None:
        """Close every socket (bounded)."""
        await asyncio.gather(*(client.close() for _, client in self.clients), return_exceptions=True)
        self.clients = []
        if self._http is not None:
            await self._http.close()


async def serve(conn: Connection, plan: WorkerPlan) -> None:
    """Answer the parent's commands until ``close`` (or the pipe breaks)."""
    worker = Worker(plan)
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                command = await loop.run_in_executor(None, conn.recv)
            except (EOFError, OSError):
                return
            name = command[0]
            if name == "connect":
                conn.send(("connected", await worker.connect()))
            elif name == "phase":
                conn.send(("sent", await worker.phase(command[1])))
            elif name == "expect":
                conn.send(("result", await worker.expect(int(command[1]), float(command[2]))))
            elif name == "churn":
                conn.send(("churned", await worker.churn(command[1])))
            elif name == "close":
                await worker.close()
                conn.send(("closed", {}))
                return
            else:
                conn.send(("error", {"message": f"unknown command {name!r}"}))
    finally:
        await asyncio.wait_for(worker.close(), 10)


def worker_main(conn: Connection, plan: WorkerPlan) -> None:
    """Entry point of a worker process (``multiprocessing`` spawn context)."""
    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(serve(conn, plan))
    else:
        uvloop.run(serve(conn, plan))
