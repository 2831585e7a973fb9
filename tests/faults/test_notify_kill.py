"""kill -9 notify_service while mention events flow, then start it again: every mention yields
exactly one stored notification (docs/subjects.md "Events": durable consumer ``notify-mentions``,
deterministic notification ids used as ``Nats-Msg-Id``), and no notification is pushed twice.

With one notify replica the kill stops all notification work; ``events.chat.message`` keeps
accumulating in the ``EVENTS`` stream, and the restarted replica resumes its durable consumer
(events it had fetched but not acked come back after ``NATTER_NOTIFY_ACK_WAIT`` = 2 s here).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

from natter.sdk import HTTPError, NatterClient, NatterHTTP
from tests.faults.conftest import FaultResults, TopologyFactory
from tests.faults.workload import new_user
from tests.support import WsClient, connect, unique_name

TARGETS = 3
INTERVAL = 0.1
BEFORE, DOWN, AFTER = 1.0, 2.0, 1.5


class Inbox:
    """A target's raw socket: pushed ``notification`` frames with their arrival time."""

    def __init__(self, sock: WsClient) -> None:
        self.sock = sock
        self.pushed: list[tuple[float, dict[str, Any]]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for raw in self.sock.conn:
            frame = json.loads(raw)
            if frame.get("type") == "notification":
                self.pushed.append((time.monotonic(), frame["data"]))

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.sock.close()


async def stored_mentions(http: NatterHTTP, room: str) -> Counter[int]:
    """How many stored notifications the user has per mentioned ``seq`` of ``room``."""
    listing = await http.notifications(limit=500)
    return Counter(
        int(item["metadata"]["seq"])
        for item in listing["items"]
        if item.get("metadata", {}).get("room") == room
    )


async def test_kill_9_notify_while_mentions_flow(
    topology: TopologyFactory, fault_results: FaultResults
) -> None:
    topo = await asyncio.to_thread(topology)
    http_urls = topo.http_urls
    sender_http, _, _ = await new_user(http_urls, "snd")
    targets = await asyncio.gather(*(new_user(http_urls, "tgt") for _ in range(TARGETS)))
    inboxes = []
    for http, _, _ in targets:
        assert http.tokens is not None
        inboxes.append(Inbox(await connect(topo.ws_url(0), http.tokens.access_token)))
    room = unique_name("men")
    notify = topo.stack.services["notify-0"]
    mentions: dict[int, int] = {}  # seq -> target index
    sent = acked = 0
    moments: dict[str, float] = {}
    try:
        async with NatterClient(topo.ws_urls, http=sender_http) as sender:
            await sender.join(room, replay=False)
            stop = asyncio.Event()

            async def send_mentions() -> None:
                nonlocal sent, acked
                n = 0
                while not stop.is_set():
                    target = n % TARGETS
                    sent += 1
                    ack = await sender.send(room, f"ping @{targets[target][2]} number {n}")
                    acked += 1
                    mentions[ack["seq"]] = target
                    n += 1
                    await asyncio.sleep(INTERVAL)

            load = asyncio.create_task(send_mentions())
            await asyncio.sleep(BEFORE)
            moments["killed"] = time.monotonic()
            await asyncio.to_thread(notify.kill)
            await asyncio.sleep(DOWN)
            await asyncio.to_thread(notify.start)
            moments["started"] = time.monotonic()
            await asyncio.sleep(AFTER)
            stop.set()
            await asyncio.wait_for(load, 35)

        # Every mention ends up stored exactly once (wait for the backlog to drain).
        deadline = time.monotonic() + 25
        counts: list[Counter[int]] = [Counter() for _ in targets]
        while True:
            try:
                counts = [await stored_mentions(http, room) for http, _, _ in targets]
            except HTTPError as error:  # 503 while the restarted replica connects
                assert error.status == 503, error
            done = all(counts[t][seq] >= 1 for seq, t in mentions.items())
            if done or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        await asyncio.sleep(0.5)  # let the inboxes read pushes still in flight
    finally:
        for inbox in inboxes:
            await inbox.stop()
        await sender_http.aclose()
        for http, _, _ in targets:
            await http.aclose()

    missing = [(seq, t) for seq, t in mentions.items() if counts[t][seq] == 0]
    stored_twice = sum(n - 1 for c in counts for n in c.values() if n > 1)
    wrong_target = [
        (seq, t) for t, c in enumerate(counts) for seq in c if seq not in mentions or mentions[seq] != t
    ]
    pushes = [
        Counter(int(d["metadata"]["seq"]) for _, d in inbox.pushed if d["metadata"].get("room") == room)
        for inbox in inboxes
    ]
    pushed_twice = sum(n - 1 for c in pushes for n in c.values() if n > 1)
    after_kill = [
        t
        for inbox in inboxes
        for t, d in inbox.pushed
        if t > moments["killed"] and d["metadata"].get("room") == room
    ]
    row = {
        "fault": "kill -9 notify_service (mentions)",
        "sent": sent,
        "acked": acked,
        "lost": len(missing),
        "duplicated": stored_twice + pushed_twice,
        "recovery_s": round(min(after_kill) - moments["killed"], 3) if after_kill else float("inf"),
        "down_s": round(moments["started"] - moments["killed"], 3),
        "mentions": len(mentions),
        "stored_twice": stored_twice,
        "pushed_twice": pushed_twice,
        "pushed": sum(sum(c.values()) for c in pushes),
        "wrong_target": wrong_target[:10],
        "missing": missing[:10],
    }
    fault_results.record(row)
    assert acked == sent and len(mentions) == sent, row
    assert not missing, row
    assert stored_twice == 0 and not wrong_target, row
    assert pushed_twice == 0, row
    # Notifications flowed again after the restart.
    assert after_kill and min(after_kill) > moments["killed"], row
