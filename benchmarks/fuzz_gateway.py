"""Fuzz a running natter gateway with 10,000+ generated frames (issue 10, item 11, on demand).

    natter up                                   # in one terminal (or any natter stack)
    python benchmarks/fuzz_gateway.py --frames 10000 --sockets 20 --url http://127.0.0.1:8000

Registers two users, a fuzzer and a control user. ``--sockets`` fuzz sockets (authenticated)
send the frames of tests/fuzz_frames.py in parallel, obeying ``retry_after`` (the gateway's
rate limit stays as configured), while the control user keeps sending to a room the fuzzers
also hammer. Stops by itself after ``--frames`` frames or ``--max-seconds``. Exits 1 and prints
what broke if any rule of tests/fuzz_frames.py is broken, a fuzz socket is closed, the control
user misses a message or history differs from what it was acked, or the gateway's id changed
(a restart). Loopback only: it refuses any other host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import websockets
from hypothesis.errors import NonInteractiveExampleWarning

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzz_frames import check_answer, raw_frames

PASSWORD = "fuzz password 1"


async def _user(http: httpx.AsyncClient) -> dict[str, Any]:
    name = f"fz_{uuid.uuid4().hex[:12]}"
    created = await http.post("/api/auth/register", json={"username": name, "password": PASSWORD})
    created.raise_for_status()
    login = await http.post("/api/auth/login", json={"username": name, "password": PASSWORD})
    login.raise_for_status()
    return dict(login.json())


async def _recv(conn: Any, timeout: float) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(conn.recv(), timeout)))


async def _fuzz_socket(
    ws: str, token: str, room: str, texts: list[str], problems: list[str], *, pace: float = 0.11
) -> int:
    """Send ``texts``, each followed by a ``ping`` whose ``pong`` proves the frame was handled
    (a refused ping is sent again after its ``retry_after``); returns how many were sent."""
    sent = 0
    try:
        async with websockets.connect(f"{ws}?token={token}", max_size=None) as conn:
            await _recv(conn, 10)  # auth_success
            await _recv(conn, 10)  # notifications
            await conn.send(json.dumps({"type": "join", "room": room}))
            cycle = time.monotonic()
            for text in texts:
                # Two frames per cycle (the fuzz frame and the ping), paced under the gateway's
                # 20 frames/s: a client that sends while told to wait is closed for abuse.
                await asyncio.sleep(max(0.0, pace - (time.monotonic() - cycle)))
                cycle = time.monotonic()
                await conn.send(text)
                sent += 1
                marker = f"m{sent}"
                await conn.send(json.dumps({"type": "ping", "id": marker}))
                while True:
                    frame = await _recv(conn, 30)
                    if frame.get("type") == "pong" and frame.get("id") == marker:
                        break
                    if frame.get("code") == "rate_limited":
                        await asyncio.sleep(float(frame.get("retry_after", 0.05)))
                        if frame.get("id") == marker:
                            await conn.send(json.dumps({"type": "ping", "id": marker}))
                        continue
                    if (problem := check_answer(frame)) is not None:
                        problems.append(problem)
    except Exception as error:  # a closed socket or a silent gateway is what this looks for
        problems.append(f"fuzz socket failed after {sent} frames: {error!r}")
    return sent


async def _control(
    ws: str, token: str, room: str, stop: asyncio.Event, acked: list[int], problems: list[str]
) -> None:
    async with websockets.connect(f"{ws}?token={token}", max_size=None) as conn:
        await _recv(conn, 10)
        await _recv(conn, 10)
        await conn.send(json.dumps({"type": "join", "room": room, "id": "j"}))
        delivered: set[int] = set()
        n = 0
        while not stop.is_set():
            n += 1
            await conn.send(
                json.dumps({"type": "chat_message", "room": room, "message": f"control {n}", "id": n})
            )
            while True:
                frame = await _recv(conn, 30)
                if frame.get("type") == "message" and frame["data"]["message"].startswith("control "):
                    delivered.add(frame["data"]["seq"])
                if frame.get("id") == n:
                    if frame.get("type") == "ack":
                        acked.append(frame["seq"])
                    elif frame.get("code") == "rate_limited":
                        await asyncio.sleep(float(frame.get("retry_after", 0.05)))
                    else:
                        problems.append(f"control send answered {frame}")
                    break
            await asyncio.sleep(0.1)
        deadline = time.monotonic() + 5
        while not set(acked) <= delivered and time.monotonic() < deadline:
            frame = await _recv(conn, 5)
            if frame.get("type") == "message" and frame["data"]["message"].startswith("control "):
                delivered.add(frame["data"]["seq"])
        if not set(acked) <= delivered:
            problems.append(f"control user missed deliveries: {sorted(set(acked) - delivered)[:10]}")


async def _stored(http: httpx.AsyncClient, room: str, control: dict[str, Any]) -> list[int]:
    """Seqs of the control user's messages in the room's history, oldest first."""
    seqs: list[int] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = (
            await http.get(
                f"/api/rooms/{room}/messages",
                params=params,
                headers={"Authorization": f"Bearer {control['access_token']}"},
            )
        ).json()
        messages = page.get("messages", [])
        seqs[0:0] = [m["seq"] for m in messages if m["user_id"] == control["user_id"]]
        if not page.get("has_more") or not messages:
            return seqs
        params["before"] = messages[0]["seq"]


async def main(args: argparse.Namespace) -> int:
    host = urlsplit(args.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.stderr.write("fuzz_gateway: loopback targets only\n")
        return 2
    ws = args.url.replace("http", "ws", 1).rstrip("/") + "/ws"
    room = f"fz-{uuid.uuid4().hex[:8]}"
    strategy = raw_frames([room, "general"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        texts = [strategy.example() for _ in range(args.frames)]
    problems: list[str] = []
    acked: list[int] = []
    async with httpx.AsyncClient(base_url=args.url, timeout=30) as http:
        before = (await http.get("/health")).json()
        fuzzer, control = await _user(http), await _user(http)
        stop = asyncio.Event()
        control_task = asyncio.create_task(_control(ws, control["access_token"], room, stop, acked, problems))
        shares = [texts[i :: args.sockets] for i in range(args.sockets)]
        started = time.monotonic()
        try:
            sent = await asyncio.wait_for(
                asyncio.gather(
                    *(_fuzz_socket(ws, fuzzer["access_token"], room, share, problems) for share in shares)
                ),
                timeout=args.max_seconds,
            )
        except TimeoutError:
            sent = []
            problems.append(f"not done within {args.max_seconds}s")
        stop.set()
        await control_task
        stored = await _stored(http, room, control)
        after = (await http.get("/health")).json()
    if after.get("gateway_id") != before.get("gateway_id") or after.get("uptime", 0) < before.get(
        "uptime", 0
    ):
        problems.append(f"the gateway restarted: {before} -> {after}")
    if stored != sorted(acked):
        problems.append(f"history holds {len(stored)} control messages, {len(acked)} were acked")
    elapsed = time.monotonic() - started
    sys.stdout.write(
        f"fuzz_gateway: {sum(sent)} frames over {args.sockets} sockets in {elapsed:.1f}s, "
        f"control user acked {len(acked)}, problems {len(problems)}\n"
    )
    for problem in problems[:20]:
        sys.stdout.write(f"  {problem}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway (loopback only)")
    parser.add_argument("--frames", type=int, default=10_000, help="frames to send (bounded: 1..1,000,000)")
    parser.add_argument("--sockets", type=int, default=20, help="fuzz sockets in parallel (1..200)")
    parser.add_argument("--max-seconds", type=float, default=600, help="stop after this long (<= 3600)")
    options = parser.parse_args()
    if not (
        1 <= options.frames <= 1_000_000 and 1 <= options.sockets <= 200 and 0 < options.max_seconds <= 3600
    ):
        parser.error("--frames 1..1000000, --sockets 1..200, --max-seconds 0..3600")
    raise SystemExit(asyncio.run(main(options)))
