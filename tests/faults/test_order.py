"""Per-room order and exactly-once under concurrency, across two gateways and two chat replicas
(PROTOCOL.md section 4 "Ordering and integrity", DESIGN.md rules 6 and 7)."""

from __future__ import annotations

import asyncio
import time

from tests.faults.conftest import TopologyFactory
from tests.faults.workload import Workload
from tests.support import unique_name

CLIENTS = 20
ROOMS = 3
PER_ROOM = 10
#: Seconds between two sends of one client: 8 frames/s, well under the 20 frames/s limit.
INTERVAL = 0.125


async def test_concurrent_senders_on_two_gateways_see_contiguous_ordered_rooms(
    topology: TopologyFactory,
) -> None:
    topo = await asyncio.to_thread(topology, gateways=2, chat=2)
    rooms = [unique_name("ord") for _ in range(ROOMS)]
    work = Workload(rooms=rooms, tag=unique_name("o"))
    # Clients alternate between the two gateways.
    await work.add_clients([[topo.ws_url(i % 2)] for i in range(CLIENTS)], topo.http_urls)
    try:
        assert {m.client.url for m in work.members} == set(topo.ws_urls)
        started = time.monotonic()
        await asyncio.wait_for(work.run(stop=asyncio.Event(), interval=INTERVAL, limit=ROOMS * PER_ROOM), 90)
        elapsed = time.monotonic() - started
        histories = await work.histories()
        behind = await work.wait_caught_up(histories, timeout=20)
        report = work.report(histories, fault="none (20 clients, 2 gateways, 2 chat)")
    finally:
        await work.close()

    total = CLIENTS * ROOMS * PER_ROOM
    assert report["sent"] == total and report["acked"] == total, report
    assert not behind, f"clients behind: {behind}"
    # History equals the set of acked messages exactly, each at the seq its ack gave.
    acked = {(r.room, r.client_msg_id): r.ack["seq"] for r in work.records if r.ack}
    stored = {(room, m["client_msg_id"]): m["seq"] for room, msgs in histories.items() for m in msgs}
    assert stored == acked
    for room in rooms:  # v2: reactions, edits and deletes share the seqs with the messages
        assert len(histories[room]) == CLIENTS * PER_ROOM
        assert work.last_seq[room] >= CLIENTS * PER_ROOM
    # Every client iterated each room contiguous, in order, without duplicates, equal to history;
    # and every socket received each room's pushed frames in strictly increasing seq order.
    assert report["details"]["view_problems"] == []
    assert report["duplicated"] == 0 and report["lost"] == 0, report["details"]
    for member in work.members:
        assert member.client.connections == 1
        for (_, room), seqs in member.client.raw.items():
            assert seqs == list(range(1, work.last_seq[room] + 1)), (member.index, room, seqs[:10])
    assert elapsed < 60
