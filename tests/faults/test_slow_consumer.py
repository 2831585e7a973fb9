"""A slow consumer is closed 1013 and slows nobody else (DESIGN.md rule 5, PROTOCOL.md section 1).

One gateway with a small send queue (32 frames), a sender allowed 200 frames/s, three members
reading normally and measuring send-to-delivery latency, and large messages (3900 characters).
Run 1 (undisturbed) and run 2 (a fourth member joins and stops reading: websockets ``max_queue=1``
on a socket with a 4 KiB receive buffer) send the same messages at the same rate into fresh rooms.

The characters are 4-byte UTF-8 (an emoji), so each delivered frame is ~15.6 KB: on loopback the
kernel gives the gateway's side of a socket a send buffer of ~3.9 MB (``ss -tm`` shows
``tb3939840``: the 64 KiB loopback MSS inflates Linux's initial ``sk_sndbuf``), and that buffer has
to fill before the gateway's transport pauses and its 32-frame queue can overflow. With ASCII
text that would take ~1000 messages; with these ~250.

Asserted: the slow socket is closed 1013 by the gateway within a few seconds, no other member
misses or duplicates a message, and the members' p99 latency in run 2 is within 2x run 1's p99
plus 20 ms. The 20 ms floor absorbs scheduler noise: on 2 cores the test client, the gateway,
chat_service and nats-server share the CPUs, and a p99 of a few ms can double by chance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from typing import Any

import httpx
import websockets

from tests.faults.conftest import FaultResults, Topology, TopologyFactory
from tests.faults.workload import percentile
from tests.support import User, WsClient, connect, join, register, unique_name

QUEUE_FRAMES = 32
#: Messages per run and the sender's pace (frames/s; the sender's limit is raised to 200/s).
MESSAGES = 300
RATE = 100.0
TEXT_CHARS = 3900
CHAR = "\U0001f600"  # 4 bytes in UTF-8
#: Seconds the gateway may take to close the slow socket once it stopped reading.
CLOSE_LIMIT = 5.0
P99_FACTOR = 2.0
P99_FLOOR_S = 0.020

SLOW_ENV = {
    "NATTER_GATEWAY_SEND_QUEUE_FRAMES": str(QUEUE_FRAMES),
    "NATTER_GATEWAY_RATE_PER_SECOND": "200",
    "NATTER_GATEWAY_RATE_BURST": "400",
}


class Reader:
    """A member that reads everything and notes when each message (by client_msg_id) arrived."""

    def __init__(self, sock: WsClient, room: str) -> None:
        self.sock = sock
        self.room = room
        self.arrived: dict[str, float] = {}
        self.seqs: list[int] = []
        self.left: dict[str, float] = {}
        #: Set once every message of a run arrived / once someone's user_left arrived.
        self.all_arrived = asyncio.Event()
        self.someone_left = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for raw in self.sock.conn:
            frame = json.loads(raw)
            if frame.get("type") == "message" and frame.get("room") == self.room:
                self.arrived.setdefault(frame["data"]["client_msg_id"], time.monotonic())
                self.seqs.append(frame["data"]["seq"])
                if len(self.arrived) >= MESSAGES:
                    self.all_arrived.set()
            elif frame.get("type") == "user_left" and frame.get("room") == self.room:
                self.left.setdefault(frame["user_id"], time.monotonic())
                self.someone_left.set()

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def send_paced(sender: WsClient, room: str, tag: str) -> tuple[dict[str, float], int]:
    """Send :data:`MESSAGES` large messages at :data:`RATE`/s without waiting for acks (the gateway
    handles one socket's frames in order); returns send times by client_msg_id and acks counted."""
    sent: dict[str, float] = {}
    acks = 0

    async def count_acks() -> None:
        nonlocal acks
        async for raw in sender.conn:
            if json.loads(raw).get("type") == "ack":
                acks += 1
                if acks == MESSAGES:
                    return

    counter = asyncio.create_task(count_acks())
    started = time.monotonic()
    for n in range(MESSAGES):
        cmid = f"{tag}-{n}"
        text = f"{cmid} " + CHAR * (TEXT_CHARS - len(cmid) - 1)
        frame = {"type": "chat_message", "room": room, "message": text, "client_msg_id": cmid}
        await asyncio.sleep(max(0.0, started + n / RATE - time.monotonic()))
        sent[cmid] = time.monotonic()
        await sender.conn.send(json.dumps(frame, ensure_ascii=False))
    try:
        await asyncio.wait_for(counter, 30)
    except TimeoutError:
        counter.cancel()
    return sent, acks


async def slow_socket(topo: Topology, token: str) -> websockets.ClientConnection:
    """A raw client that will stop reading: 4 KiB receive buffer, one queued message at most."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", topo.stack.gateway_ports[0]))
    return await websockets.connect(f"{topo.ws_url(0)}?token={token}", sock=sock, max_queue=1, open_timeout=5)


async def closes_1013(topo: Topology) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"{topo.http_url(0)}/metrics")).text
    match = re.search(r'^natter_gateway_closes_total\{code="1013"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


async def one_run(
    topo: Topology, members: list[WsClient], sender: WsClient, tag: str, slow: WsClient | None = None
) -> dict[str, Any]:
    """Everyone joins a fresh room, the sender sends; returns latencies, delivery counts, the 1013
    closes the gateway counted, and each reader's arrival times (``arrived``)."""
    room = unique_name("slow")
    for sock in [sender, *members]:
        await join(sock, room)
    readers = [Reader(sock, room) for sock in members]
    closes_before = await closes_1013(topo)
    if slow is not None:
        await join(slow, room)  # the join answer is the slow member's last read
    stopped = time.monotonic()
    sent, acks = await send_paced(sender, room, tag)
    waits = [asyncio.create_task(r.all_arrived.wait()) for r in readers]
    _, pending = await asyncio.wait(waits, timeout=10)
    for task in pending:
        task.cancel()
    for reader in readers:
        await reader.stop()
    latencies = [r.arrived[c] - t for r in readers for c, t in sent.items() if c in r.arrived]
    return {
        "room": room,
        "sent": len(sent),
        "acked": acks,
        "missing": sum(MESSAGES - len(r.arrived) for r in readers),
        "duplicated": sum(len(r.seqs) - len(set(r.seqs)) for r in readers),
        "in_order": all(r.seqs == sorted(r.seqs) for r in readers),
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "closes_1013": (await closes_1013(topo)) - closes_before,
        "stopped": stopped,
        "arrived": [r.arrived for r in readers],
    }


async def read_until_closed(
    conn: websockets.ClientConnection, timeout: float = 15.0
) -> tuple[int | None, list[str]]:
    """Read everything the gateway wrote, then the close frame; returns the close code and the
    ``client_msg_id`` of every message read."""
    read: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            async for raw in conn:
                frame = json.loads(raw)
                if frame.get("type") == "message":
                    read.append(frame["data"]["client_msg_id"])
    except websockets.ConnectionClosed:
        pass
    return conn.close_code, read


def overflow_moment(run: dict[str, Any], tag: str, read: list[str]) -> float | None:
    """When the gateway closed the slow socket, seen from the other members.

    The slow socket got messages up to index ``L`` written to its transport; the next
    :data:`QUEUE_FRAMES` waited in its queue, and the fan-out of message ``L + QUEUE_FRAMES + 1``
    overflowed it (one more if its writer held one frame aside): the gateway fanned that message
    out to everyone at that moment, so its first arrival at another member dates the close
    (within one message, 10 ms at 100/s).
    """
    last = max((int(cmid.rsplit("-", 1)[1]) for cmid in read if cmid.startswith(tag)), default=-1)
    cmid = f"{tag}-{last + QUEUE_FRAMES + 1}"
    times = [arrived[cmid] for arrived in run["arrived"] if cmid in arrived]
    return min(times) if times else None


async def attempt(
    topo: Topology, sender: WsClient, members: list[WsClient], slow_user: User
) -> dict[str, Any]:
    """One undisturbed run, then one with a slow member; returns both runs' numbers."""
    calm = await one_run(topo, members, sender, unique_name("calm"))
    slow = await slow_socket(topo, slow_user.access_token)
    slow_client = WsClient(slow)
    assert (await slow_client.recv())["type"] == "auth_success"
    assert (await slow_client.recv())["type"] == "notifications"
    busy_tag = unique_name("busy")
    busy = await one_run(topo, members, sender, busy_tag, slow=slow_client)
    code, slow_read = await read_until_closed(slow)
    closed_at = overflow_moment(busy, busy_tag, slow_read)
    return {
        "calm": calm,
        "busy": busy,
        "code": code,
        "slow_read": len(slow_read),
        "closed_after": None if closed_at is None else closed_at - busy["stopped"],
    }


def latency_ok(run: dict[str, Any]) -> bool:
    return bool(run["busy"]["p99"] <= P99_FACTOR * run["calm"]["p99"] + P99_FLOOR_S)


async def test_slow_consumer_is_closed_1013_and_others_keep_their_latency(
    topology: TopologyFactory, fault_results: FaultResults
) -> None:
    """Up to two attempts: every attempt must show the 1013 close and no effect on delivery; the
    latency comparison must hold in one of them (a burst of other work on the shared 2-core
    machine can spoil one run's p99; a slow member that really slowed the others fails both)."""
    topo = await asyncio.to_thread(topology, env=SLOW_ENV)
    async with httpx.AsyncClient(base_url=topo.http_url(0), timeout=10) as http:
        people: list[User] = list(await asyncio.gather(*(register(http) for _ in range(6))))
    sender = await connect(topo.ws_url(0), people[0].access_token)
    members = [await connect(topo.ws_url(0), p.access_token) for p in people[1:4]]
    runs: list[dict[str, Any]] = []
    try:
        for slow_user in people[4:6]:
            runs.append(await attempt(topo, sender, members, slow_user))
            if latency_ok(runs[-1]):
                break
    finally:
        await sender.close()
        for sock in members:
            await sock.close()

    last = runs[-1]
    calm, busy = last["calm"], last["busy"]
    row = {
        "fault": "slow consumer closed 1013",
        "sent": sum(r["calm"]["sent"] + r["busy"]["sent"] for r in runs),
        "acked": sum(r["calm"]["acked"] + r["busy"]["acked"] for r in runs),
        "lost": sum(r["calm"]["missing"] + r["busy"]["missing"] for r in runs),
        "duplicated": sum(r["calm"]["duplicated"] + r["busy"]["duplicated"] for r in runs),
        "recovery_s": 0.0,
        "attempts": len(runs),
        "slow_socket_closed_after_s": [
            None if r["closed_after"] is None else round(r["closed_after"], 3) for r in runs
        ],
        "slow_socket_messages_read": [r["slow_read"] for r in runs],
        "slow_socket_close_code": [r["code"] for r in runs],
        "members_p50_ms": [
            {"undisturbed": round(r["calm"]["p50"] * 1000, 1), "disturbed": round(r["busy"]["p50"] * 1000, 1)}
            for r in runs
        ],
        "members_p99_ms": [
            {"undisturbed": round(r["calm"]["p99"] * 1000, 1), "disturbed": round(r["busy"]["p99"] * 1000, 1)}
            for r in runs
        ],
        "rate_per_s": RATE,
        "message_chars": TEXT_CHARS,
        "send_queue_frames": QUEUE_FRAMES,
    }
    fault_results.record(row)
    fault_results.note("slow consumer: members p99 undisturbed", round(calm["p99"] * 1000, 1), "ms")
    fault_results.note("slow consumer: members p99 with a slow member", round(busy["p99"] * 1000, 1), "ms")
    if last["closed_after"] is not None:
        fault_results.note(
            "slow consumer: closed 1013 after it stopped reading", round(last["closed_after"], 2), "s"
        )

    for run in runs:
        calm, busy = run["calm"], run["busy"]
        assert calm["acked"] == busy["acked"] == MESSAGES, row
        assert calm["missing"] == busy["missing"] == 0, row
        assert calm["duplicated"] == busy["duplicated"] == 0 and calm["in_order"] and busy["in_order"], row
        assert calm["closes_1013"] == 0 and busy["closes_1013"] == 1, row
        assert run["code"] == 1013, row
        assert run["closed_after"] is not None and run["closed_after"] < CLOSE_LIMIT, row
    assert latency_ok(runs[-1]), row


async def test_slow_consumer_that_never_reads_again_is_torn_down(topology: TopologyFactory) -> None:
    topo = await asyncio.to_thread(topology, env=SLOW_ENV)
    async with httpx.AsyncClient(base_url=topo.http_url(0), timeout=10) as http:
        sender_user, watcher_user, slow_user = await asyncio.gather(*(register(http) for _ in range(3)))
    sender = await connect(topo.ws_url(0), sender_user.access_token)
    watcher = await connect(topo.ws_url(0), watcher_user.access_token)
    slow = await slow_socket(topo, slow_user.access_token)
    try:
        slow_client = WsClient(slow)
        assert (await slow_client.recv())["type"] == "auth_success"
        assert (await slow_client.recv())["type"] == "notifications"
        room = unique_name("stuck")
        for sock in (sender, watcher, slow_client):
            await join(sock, room)
        reader = Reader(watcher, room)
        await send_paced(sender, room, unique_name("stuck"))
        assert await closes_1013(topo) == 1  # the gateway gave up on the slow socket
        # The slow client never reads again: within uvicorn's close timeout (10 s) + 2 s, the
        # gateway must have let it go (teardown announces user_left, /health stops counting it).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.someone_left.wait(), 12)
        await reader.stop()
        async with httpx.AsyncClient(timeout=5) as http:
            health = (await http.get(f"{topo.http_url(0)}/health")).json()
        assert slow_user.user_id in reader.left, "no user_left for the closed slow socket"
        assert health["active_connections"] == 2, health
    finally:
        for sock in (sender, watcher):
            await sock.close()
        slow.transport.abort()
