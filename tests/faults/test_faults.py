"""Faults under load, measured from the clients' side: SDK clients send throughout each fault, then
acks, history and what every client iterated are compared (tests/faults/workload.py defines the
numbers; each fault's row goes to the results table printed at the end of the run).

- kill -9 one of two chat replicas (clients sending one at a time, and three at a time);
- kill -9 one of two gateways (clients know both URLs);
- nats-server stopped for 5 s, then started again (one node);
- kill -9 the node leading ``CHAT_MESSAGES`` in a 3-node cluster with replicas 3;
- the same cluster without a fault: concurrent joins and sends from two chat replicas must all
  succeed (a clustered stream reports a stale expected sequence as 10164, not 10071).

The slow consumer and the notify kill have their own modules.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import nats
import pytest

from shared import room_shards, subjects
from tests.faults.conftest import FaultResults, Topology, TopologyFactory
from tests.faults.workload import Workload
from tests.support import connect, join, register, requests_served, unique_name

#: Seconds of load before the fault and after it (the fault's own duration comes on top).
BEFORE = 1.0
AFTER = 4.0
#: Seconds between two sends of one client (10 frames/s, half the per-socket limit).
INTERVAL = 0.1
#: PROTOCOL.md section 3: a dead gateway's users' user_left arrive within 60 s.
USER_LEFT_LIMIT = 60.0


async def load_through(
    work: Workload,
    fault: Callable[[], Awaitable[None]],
    *,
    name: str,
    results: FaultResults,
    after: float = AFTER,
    interval: float = INTERVAL,
    burst: int = 1,
) -> tuple[dict[str, Any], list[str]]:
    """Send throughout ``fault()`` (each client ``burst`` sends every ``interval`` s); returns
    the results row (recorded) and the clients that did not catch up with history."""
    stop = asyncio.Event()
    load = asyncio.create_task(work.run(stop=stop, interval=interval, burst=burst))
    try:
        await asyncio.sleep(BEFORE)
        work.fault_at = time.monotonic()
        await fault()
        await asyncio.sleep(after)
    finally:
        stop.set()
        # Sends in flight finish: the SDK gives each one 30 s (send_deadline).
        await asyncio.wait_for(load, 45)
    histories = await work.histories()
    behind = await work.wait_caught_up(histories, timeout=20)
    row = work.report(histories, fault=name)
    row["clients_behind"] = behind
    results.record(row)
    return row, behind


def assert_exactly_once(row: dict[str, Any], behind: list[str]) -> None:
    """Nothing acked lost, nothing twice, every send acked, every client's view equals history."""
    details = row["details"]
    assert row["lost"] == 0, details
    assert row["duplicated"] == 0, details
    assert row["unacked"] == 0, details["send_errors"]
    assert not behind, f"clients behind history: {behind}"
    assert details["view_problems"] == [], details["view_problems"]
    assert details["history_problems"] == [], details["history_problems"]


def acked_after(work: Workload, moment: float) -> int:
    """Sends started after ``moment`` that were acked."""
    return sum(1 for r in work.records if r.ack is not None and r.started > moment)


def acks_received_after(work: Workload, moment: float) -> int:
    """Acks that arrived after ``moment`` (retried sends included)."""
    return sum(1 for r in work.records if r.ack is not None and (r.finished or 0) > moment)


async def workload(
    topo: Topology, clients: int, *, rooms: int = 2, spread: bool = False, sequential_joins: bool = False
) -> Workload:
    """``clients`` SDK clients in ``rooms`` fresh rooms; with ``spread`` client ``i`` starts on
    gateway ``i % n`` and knows every gateway's URL."""
    work = Workload(rooms=[unique_name("f") for _ in range(rooms)], tag=unique_name("t"))
    urls = topo.ws_urls
    if spread:
        per_client = [urls[i % len(urls) :] + urls[: i % len(urls)] for i in range(clients)]
    else:
        per_client = [urls for _ in range(clients)]
    await work.add_clients(per_client, topo.http_urls, sequential_joins=sequential_joins)
    return work


@pytest.mark.parametrize(
    ("clients", "interval", "burst", "name"),
    [
        (8, INTERVAL, 1, "kill -9 chat replica (1 of 2)"),
        # 10 messages/s per socket and their follow-ups: under the per-socket rate limit
        (6, 0.3, 3, "kill -9 chat replica (1 of 2), 3 sends at a time"),
    ],
    ids=["one-at-a-time", "pipelined"],
)
async def test_kill_9_one_of_two_chat_replicas(
    topology: TopologyFactory,
    fault_results: FaultResults,
    clients: int,
    interval: float,
    burst: int,
    name: str,
) -> None:
    """The victim is frozen (SIGSTOP) for 0.5 s before the SIGKILL, so that requests are surely in
    flight at it when it dies (at ~20 ms per send a bare kill -9 often finds none): those wait for
    the gateway's request timeout (5 s), are answered ``unavailable``, and the SDK resends them
    with the same client_msg_id to the surviving replica; a frozen replica may also have stored a
    message without answering, and the resend must then return the original ack.

    ``pipelined``: every client sends ``burst`` messages at once (docs/protocol.md "Pipelined
    sends"); the gateway carries them to chat as one ``chat.send.batch``, so a batch stuck at the
    frozen replica fails whole (``unavailable`` for each of its sends) and each is resent with its
    id, possibly inside another batch with sends that were not stuck. Still exactly once."""
    topo = await asyncio.to_thread(topology, chat=2)
    work = await workload(topo, clients)
    victim = topo.stack.services["chat-1"]

    async def freeze_then_kill() -> None:
        victim.signal_group(signal.SIGSTOP)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(victim.kill)

    try:
        row, behind = await load_through(
            work,
            freeze_then_kill,
            name=name,
            results=fault_results,
            after=6.0,
            interval=interval,
            burst=burst,
        )
    finally:
        await work.close()
    assert not victim.alive()
    assert_exactly_once(row, behind)
    # Sends stuck at the dead replica were answered `unavailable` and retried...
    assert row["error_answers"].get("unavailable", 0) > 0, row
    # ...and the surviving replica kept serving: sends started after the kill were acked.
    assert acks_received_after(work, (work.fault_at or 0) + 0.5) >= clients * 2, row
    assert row["recovery_s"] < 8.0, row
    if burst > 1:  # the bursts did go as batches (the surviving replica served some)
        assert await requests_served(topo.stack.nats.url, "chat", subjects.CHAT_SEND_BATCH) > 0


async def test_kill_9_one_of_two_gateways(topology: TopologyFactory, fault_results: FaultResults) -> None:
    """SDK clients on the dead gateway fail over to the other one and recover every missed
    message with ``since``. Two more users on the dead gateway, with raw sockets that do not
    reconnect, must be announced ``user_left`` to the members on the other gateway within 60 s
    (PROTOCOL.md section 3): their heartbeat entry expires (bucket TTL 30 s, fixed) and the chat
    janitor (every 1 s here, grace 1 s) sweeps their presence keys. The topology is the one of
    item 1: two gateways and two replicas of every service."""
    topo = await asyncio.to_thread(topology, gateways=2, chat=2, auth=2, notify=2)
    work = await workload(topo, 8, spread=True)
    victims = [m for m in work.members if m.client.url == topo.ws_url(0)]
    stayers = [m for m in work.members if m.client.url == topo.ws_url(1)]
    assert len(victims) == len(stayers) == 4
    async with httpx.AsyncClient(base_url=topo.http_url(1), timeout=10) as http:
        gone_users = [await register(http) for _ in range(2)]
    gone = [await connect(topo.ws_url(0), user.access_token) for user in gone_users]
    gone_ids = {user.user_id for user in gone_users}
    for sock in gone:
        await join(sock, work.rooms[0])
    killed: dict[str, float] = {}

    async def kill() -> None:
        killed["at"] = time.monotonic()
        await asyncio.to_thread(topo.stack.gateways[0].kill)

    def user_left_times() -> dict[str, float] | None:
        """Once every stayer has seen both raw users' user_left: per user, the latest arrival."""
        latest: dict[str, float] = {}
        for member in stayers:
            firsts: dict[str, float] = {}
            for at, frame in member.other_frames:
                if frame.get("type") == "user_left" and frame.get("user_id") in gone_ids:
                    firsts.setdefault(frame["user_id"], at)
            if set(firsts) != gone_ids:
                return None
            for user_id, at in firsts.items():
                latest[user_id] = max(latest.get(user_id, 0.0), at)
        return latest

    try:
        row, behind = await load_through(work, kill, name="kill -9 gateway (1 of 2)", results=fault_results)
        deadline = killed["at"] + USER_LEFT_LIMIT
        while True:
            left = user_left_times()
            if left is not None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        # Snapshot before closing: closing the clients announces their own user_left.
        victim_ids = {m.user_id for m in victims}
        victims_left = [
            frame
            for m in stayers
            for _, frame in m.other_frames
            if frame.get("type") == "user_left" and frame.get("user_id") in victim_ids
        ]
    finally:
        await work.close()
        for sock in gone:
            await sock.close()
    assert_exactly_once(row, behind)
    for member in victims:
        # Reconnected to the other gateway, re-joined with since: its view equals history.
        assert member.client.connections == 2, member.index
    assert row["recovery_s"] < 5.0, row
    assert left is not None, f"user_left not seen by every member within {USER_LEFT_LIMIT}s"
    user_left_s = round(max(left.values()) - killed["at"], 2)
    row["user_left_after_s"] = user_left_s
    fault_results.record(row)
    fault_results.note("kill -9 gateway: its users' user_left on the other gateway", user_left_s, "s")
    assert user_left_s < USER_LEFT_LIMIT
    # Users who failed over are still online: the sweep announced no user_left for them.
    assert not victims_left, victims_left


async def test_nats_stopped_for_5_s_then_started(
    topology: TopologyFactory, fault_results: FaultResults
) -> None:
    topo = await asyncio.to_thread(topology)
    work = await workload(topo, 6)
    outage: dict[str, float] = {}

    async def outage_5s() -> None:
        await asyncio.to_thread(topo.stack.nats.stop)
        outage["stopped"] = time.monotonic()
        await asyncio.sleep(5.0)
        await asyncio.to_thread(topo.stack.nats.start)
        outage["started"] = time.monotonic()

    try:
        row, behind = await load_through(
            work, outage_5s, name="nats-server stopped 5 s (1 node)", results=fault_results, after=6.0
        )
        # Nothing was restarted but NATS: every replica and the gateway reconnected by themselves.
        await asyncio.to_thread(topo.wait_replicas, 30)
        async with httpx.AsyncClient() as http:
            health = await http.get(f"{topo.http_url(0)}/health", timeout=5)
        assert health.status_code == 200 and health.json()["nats"] == "connected"
    finally:
        await work.close()
    assert_exactly_once(row, behind)
    # Sends during the outage were answered `unavailable` and succeeded on retry (same ids).
    assert row["error_answers"].get("unavailable", 0) > 0, row
    assert acked_after(work, outage["started"]) >= 6, row
    assert row["recovery_s"] < 20.0, row


async def _stream_leader(servers: list[str], stream: str) -> str:
    nc = await nats.connect(servers=servers, connect_timeout=2)
    try:
        info = await nc.jetstream(timeout=5).stream_info(stream)
        assert info.cluster is not None and info.cluster.leader
        return str(info.cluster.leader)
    finally:
        await nc.close()


async def test_kill_9_chat_stream_leader_in_3_node_cluster(
    cluster_topology: TopologyFactory, fault_results: FaultResults
) -> None:
    topo = await asyncio.to_thread(cluster_topology, chat=2)
    assert topo.cluster is not None
    # Clients join one after the other: concurrent first joins on a cluster can fail
    # (second bug of test_cluster_concurrent_joins_and_sends_from_two_chat_replicas_all_succeed).
    work = await workload(topo, 6, sequential_joins=True)
    # the shard stream (shared/room_shards.py) holding the first room's log
    stream = room_shards.layout(work.rooms[0], 4).stream
    leader = await _stream_leader(topo.servers, stream)
    victim = topo.cluster.node_named(leader)

    async def kill() -> None:
        await asyncio.to_thread(victim.kill)

    try:
        row, behind = await load_through(
            work, kill, name="kill -9 NATS stream leader (3-node, R3)", results=fault_results, after=10.0
        )
        new_leader = await _stream_leader([n.url for n in topo.cluster.nodes if n is not victim], stream)
    finally:
        await work.close()
    row["killed_node"] = leader
    row["new_leader"] = new_leader
    row["service_restarts_at_startup"] = topo.startup_restarts
    fault_results.record(row)
    assert new_leader != leader
    details = row["details"]
    assert row["lost"] == 0 and row["duplicated"] == 0, details
    assert not behind and details["view_problems"] == [] and details["history_problems"] == [], details
    # Every send was acked in the end: `unavailable` during the election is retried by the SDK.
    assert row["acked"] == row["sent"] and not details["send_errors"], row
    # The service continued: sends kept being acked after the election, fresh ones included.
    assert acks_received_after(work, (work.fault_at or 0) + 1) >= 6, row
    assert row["recovery_s"] < 15.0, row


async def test_cluster_concurrent_joins_and_sends_from_two_chat_replicas_all_succeed(
    cluster_topology: TopologyFactory,
) -> None:
    """Production shape (3 nodes, replicas 3, two chat replicas), no fault: clients joining a new
    room at once and sending into it concurrently are all answered, each message stored once."""
    topo = await asyncio.to_thread(cluster_topology, chat=2)
    work = await workload(topo, 6, rooms=1)
    stop = asyncio.Event()
    try:
        load = asyncio.create_task(work.run(stop=stop, interval=INTERVAL))
        await asyncio.sleep(3.0)
        stop.set()
        await asyncio.wait_for(load, 45)
        histories = await work.histories()
        behind = await work.wait_caught_up(histories, timeout=20)
    finally:
        await work.close()
    row = work.report(histories, fault="cluster, no fault")
    assert row["sent"] >= 60
    assert_exactly_once(row, behind)
