"""Client-side load and accounting for the fault tests, with the real SDK (natter.sdk).

A :class:`Workload` is a set of SDK clients (one user each) that join the same rooms, send
throughout a fault with unique ``client_msg_id`` s, and iterate what they receive. Afterwards
:meth:`Workload.report` compares three views of each room, all taken from the clients' side:

- the acks the senders got (what the server promised: PROTOCOL.md section 4, "an ack means the
  message is durably stored");
- the room's history, paged over HTTP (``GET /api/rooms/{room}/messages``), materialised;
- what each client iterated (the SDK's de-duplicated, ordered view), applied to a
  :class:`~natter.sdk.RoomView` per room, and what each socket received raw, before the SDK
  (:class:`ObservedClient`).

v2: besides messages, each client reacts to, edits and deletes some of its own messages
(:meth:`Workload.send_one`), so every fault also exercises room events: each client's
materialised view must equal ``history`` and its iterated seqs must be exactly 1..last_seq.

Definitions used in the results table:

- *sent*: sends started (distinct ``client_msg_id``); *acked*: sends that returned an ack;
- *lost*: an acked message missing from history (or stored under another seq than acked), or a
  room event seq a client never iterated (its iterated seqs are not 1..last_seq);
- *duplicated*: a ``client_msg_id`` stored twice, a seq stored twice, a seq iterated twice by a
  client, or a socket that received a room's seq twice or out of order;
- *recovery_s*: first client-visible failure (an ``error`` answer, a socket that ended, a send
  stalled longer than :data:`STALL` seconds, counted from its start + :data:`STALL`) to the first
  ack of a send started after it. 0 when no client saw a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from natter.sdk import NatterClient, NatterError, NatterHTTP, RoomView
from natter.sdk.dedup import ROOM_EVENT_TYPES
from tests.support import unique_name

PASSWORD = "correct horse 1"
#: A send taking longer than this (seconds) counts as a client-visible failure.
STALL = 1.0

Frame = dict[str, Any]


class ObservedClient(NatterClient):
    """A :class:`NatterClient` that also records, before its own ordering and de-duplication:

    - ``raw[(connection, room)]``: ``seq`` of each pushed ``message`` frame, per socket;
    - ``error_answers``: ``(monotonic time, code)`` of each ``error`` answer to a request;
    - ``socket_ends``: monotonic times at which a socket ended without ``close()``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw: dict[tuple[int, str], list[int]] = defaultdict(list)
        self.error_answers: list[tuple[float, str]] = []
        self.socket_ends: list[float] = []

    def _on_frame(self, frame: Frame) -> None:
        kind = frame.get("type")
        if kind in ROOM_EVENT_TYPES and frame.get("id") is None:
            data = frame.get("data") or {}
            self.raw[(self.connections, str(frame.get("room")))].append(int(data.get("seq", -1)))
        elif kind == "error" and frame.get("id") is not None:
            self.error_answers.append((time.monotonic(), str(frame.get("code"))))
        super()._on_frame(frame)

    async def _serve(self, conn: Any) -> tuple[int, str]:
        try:
            return await super()._serve(conn)
        finally:
            if not self._closed:
                self.socket_ends.append(time.monotonic())


@dataclass
class SendRecord:
    """One ``send()``: its key, when it started/finished (monotonic seconds), its outcome."""

    client: int
    room: str
    client_msg_id: str
    text: str
    started: float
    finished: float | None = None
    ack: Frame | None = None
    error: str | None = None
    #: ``message``, or the v2 request that followed it: ``react``, ``edit``, ``delete``.
    kind: str = "message"


@dataclass
class Member:
    """One user with one SDK client, and what it iterated per room (in order)."""

    index: int
    http: NatterHTTP
    client: ObservedClient
    user_id: str
    username: str
    #: seqs of every room event iterated, per room, in order.
    iterated: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    views: dict[str, RoomView] = field(default_factory=dict)
    received_at: dict[str, float] = field(default_factory=dict)
    other_frames: list[tuple[float, Frame]] = field(default_factory=list)
    collector: asyncio.Task[None] | None = None

    def view(self, room: str) -> RoomView:
        """This client's materialised view of ``room``."""
        if room not in self.views:
            self.views[room] = RoomView(room, me=self.user_id)
        return self.views[room]

    async def collect(self) -> None:
        """Iterate the client forever: room events into views, other frames with their time."""
        async for frame in self.client:
            now = time.monotonic()
            if frame.get("type") in ROOM_EVENT_TYPES:
                data = frame["data"]
                self.iterated[frame["room"]].append(data["seq"])
                self.view(frame["room"]).apply(frame)
                if frame["type"] == "message" and data.get("client_msg_id"):
                    self.received_at.setdefault(f"{frame['room']}/{data['client_msg_id']}", now)
            else:
                self.other_frames.append((now, frame))


async def new_user(http_urls: Sequence[str], prefix: str = "u") -> tuple[NatterHTTP, str, str]:
    """Register and log in a fresh user; returns (its NatterHTTP with tokens, user_id, username)."""
    http = NatterHTTP(list(http_urls))
    username = unique_name(prefix)
    registered = await http.register(username, PASSWORD)
    await http.login(username, PASSWORD)
    return http, str(registered["user_id"]), username


async def full_history(http: NatterHTTP, room: str) -> list[Frame]:
    """Every message of ``room``, oldest first, paged back 100 at a time over HTTP."""
    pages: list[list[Frame]] = []
    before: int | None = None
    for _ in range(1000):
        page = await http.history(room, before=before, limit=100)
        messages = page["messages"]
        if messages:
            pages.append(messages)
            before = messages[0]["seq"]
        if not page["has_more"] or not messages:
            break
    return [message for page in reversed(pages) for message in page]


def _without_me(messages: list[Frame]) -> list[Frame]:
    """Messages with ``reactions[].me`` dropped: one history read stands for every client."""
    return [
        {**m, "reactions": [{k: v for k, v in r.items() if k != "me"} for r in m.get("reactions", [])]}
        for m in messages
    ]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; ``nan`` when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[rank]


class Workload:
    """SDK clients in the same rooms, sending and iterating; see the module docstring.

    Args:
        rooms: room names every client joins.
        tag: prefix of every ``client_msg_id`` (unique per test).

    Set :attr:`fault_at` (monotonic seconds) when the fault starts: failures before it do not
    count for the recovery time.
    """

    def __init__(self, *, rooms: list[str], tag: str, events: bool = True) -> None:
        self.rooms = rooms
        self.tag = tag
        #: v2: follow some messages with reactions, edits and deletes.
        self.events = events
        self.members: list[Member] = []
        self.records: list[SendRecord] = []
        self.event_records: list[SendRecord] = []
        self.fault_at: float | None = None
        #: each room's last seq (any event kind), read by :meth:`wait_caught_up`.
        self.last_seq: dict[str, int] = {}

    async def add_clients(
        self,
        ws_urls: Sequence[Sequence[str]],
        http_urls: Sequence[str],
        *,
        sequential_joins: bool = False,
        **client_options: Any,
    ) -> None:
        """Register one user per entry of ``ws_urls``, connect its client, join every room (all
        clients at once, or one after the other with ``sequential_joins``). On failure every
        client made so far is closed."""
        # At most 4 registrations at a time: each costs two argon2id hashes on auth_service.
        limit = asyncio.Semaphore(4)

        async def register() -> tuple[NatterHTTP, str, str]:
            async with limit:
                return await new_user(http_urls)

        users = await asyncio.gather(*(register() for _ in ws_urls))
        for urls, (http, user_id, username) in zip(ws_urls, users, strict=True):
            client = ObservedClient(list(urls), http=http, **client_options)
            member = Member(len(self.members), http, client, user_id, username)
            self.members.append(member)
        try:
            await asyncio.gather(*(m.client.connect(timeout=20) for m in self.members))
            for member in self.members:
                member.collector = asyncio.create_task(member.collect())
            for room in self.rooms:
                if sequential_joins:
                    for member in self.members:
                        await member.client.join(room, replay=False)
                else:
                    await asyncio.gather(*(m.client.join(room, replay=False) for m in self.members))
        except BaseException:
            await self.close()
            raise

    async def send_one(self, member: Member, room: str, number: int, text: str | None = None) -> SendRecord:
        """One ``send()`` with ``client_msg_id`` = ``<tag>-<client>-<room>-<number>``, recorded."""
        cmid = f"{self.tag}-{member.index}-{room}-{number}"
        record = SendRecord(
            member.index, room, cmid, text or f"{cmid} @{time.monotonic():.6f}", time.monotonic()
        )
        self.records.append(record)
        try:
            record.ack = await member.client.send(room, record.text, client_msg_id=cmid)
        except NatterError as error:
            record.error = type(error).__name__
        record.finished = time.monotonic()
        if record.ack is not None and self.events:
            await self._follow_up(member, room, number, int(record.ack["seq"]))
        return record

    async def _follow_up(self, member: Member, room: str, number: int, seq: int) -> None:
        """v2 room events on the message just acked: about 1 in 3 gets a reaction, 1 in 5 an
        edit, 1 in 11 is deleted (recorded like sends; their acks count, their failures do
        not fail the run: what is stored must show in history and every view)."""
        client = member.client
        steps: list[tuple[str, Any]] = []
        if number % 3 == 1:
            steps.append(("react", lambda cmid: client.react(room, seq, "+1", client_msg_id=cmid)))
        if number % 5 == 2:
            steps.append(
                ("edit", lambda cmid: client.edit(room, seq, f"edited {number}", client_msg_id=cmid))
            )
        if number % 11 == 4:
            steps.append(("delete", lambda cmid: client.delete(room, seq, client_msg_id=cmid)))
        for kind, call in steps:
            cmid = f"{self.tag}-{member.index}-{room}-{number}-{kind}"
            record = SendRecord(member.index, room, cmid, kind, time.monotonic(), kind=kind)
            self.event_records.append(record)
            try:
                record.ack = await call(cmid)
            except NatterError as error:
                record.error = type(error).__name__
            record.finished = time.monotonic()

    async def send_loop(
        self, member: Member, *, stop: asyncio.Event, interval: float, limit: int, burst: int = 1
    ) -> None:
        """Send round-robin over the rooms every ``interval`` s until ``stop`` or ``limit`` sends;
        ``burst`` > 1 sends that many at once each time, without waiting for each other's acks
        (the gateway pipelines them: docs/protocol.md "Pipelined sends")."""
        for first in range(0, limit, burst):
            if stop.is_set():
                return
            started = time.monotonic()
            numbers = range(first, min(first + burst, limit))
            await asyncio.gather(
                *(self.send_one(member, self.rooms[number % len(self.rooms)], number) for number in numbers)
            )
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def run(
        self, *, stop: asyncio.Event, interval: float = 0.1, limit: int = 10_000, burst: int = 1
    ) -> None:
        """Every client's :meth:`send_loop` at once, until ``stop`` is set (or ``limit``)."""
        await asyncio.gather(
            *(self.send_loop(m, stop=stop, interval=interval, limit=limit, burst=burst) for m in self.members)
        )

    async def histories(self, http: NatterHTTP | None = None) -> dict[str, list[Frame]]:
        http = http or self.members[0].http
        return {room: await full_history(http, room) for room in self.rooms}

    async def last_seqs(self, http: NatterHTTP | None = None) -> dict[str, int]:
        """Each room's last seq (any event kind), from ``GET /api/rooms``."""
        listed = await (http or self.members[0].http).rooms()
        return {row["name"]: int(row["last_seq"]) for row in listed if row["name"] in self.rooms}

    async def wait_caught_up(self, histories: dict[str, list[Frame]], timeout: float = 20.0) -> list[str]:
        """Wait until every client iterated up to each room's last stored seq; returns the
        ``"client/room"`` pairs still behind at ``timeout`` (empty when all caught up)."""
        deadline = time.monotonic() + timeout
        self.last_seq = await self.last_seqs()
        while True:
            behind = [
                f"{m.index}/{room}"
                for m in self.members
                for room, last in self.last_seq.items()
                if last and (m.client.last_seq(room) or 0) < last
            ]
            if not behind or time.monotonic() > deadline:
                return behind
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        for member in self.members:
            await member.client.close()
            if member.collector is not None:
                member.collector.cancel()
                with contextlib.suppress(asyncio.CancelledError, NatterError):
                    await member.collector
            await member.http.aclose()

    # --- accounting -----------------------------------------------------------------------

    def report(self, histories: dict[str, list[Frame]], *, fault: str) -> dict[str, Any]:
        """The results row for ``fault`` (see the module docstring) plus the details behind it."""
        stored: dict[tuple[str, str], Frame] = {}
        cmid_counts: Counter[tuple[str, str]] = Counter()
        history_problems: list[str] = []
        for room, messages in histories.items():
            seqs = [m["seq"] for m in messages]
            if seqs != sorted(set(seqs)):
                history_problems.append(f"{room}: message seqs not increasing")
            for message in messages:
                key = (room, message.get("client_msg_id") or "")
                cmid_counts[key] += 1
                stored[key] = message
        history_dups = sum(n - 1 for n in cmid_counts.values() if n > 1)
        history_dups += sum(len(m) - len({x["seq"] for x in m}) for m in histories.values())

        acked = [r for r in self.records if r.ack is not None]
        lost = [r.client_msg_id for r in acked if (r.room, r.client_msg_id) not in stored]
        mismatched = [
            r.client_msg_id
            for r in acked
            if (r.room, r.client_msg_id) in stored
            and (stored[(r.room, r.client_msg_id)]["seq"] != r.ack["seq"] if r.ack else True)
        ]

        iterated_dups = 0
        gaps = 0
        view_problems: list[str] = []
        last_seq = self.last_seq
        for member in self.members:
            for room, messages in histories.items():
                seqs = member.iterated.get(room, [])
                iterated_dups += len(seqs) - len(set(seqs))
                expected = list(range(seqs[0], last_seq.get(room, seqs[-1]) + 1)) if seqs else []
                if sorted(set(seqs)) != expected:
                    gaps += len(set(expected) - set(seqs))
                    view_problems.append(f"client {member.index} room {room}: iterated seqs have gaps")
                view = _without_me(member.view(room).messages())
                if view != _without_me(messages):
                    view_problems.append(
                        f"client {member.index} room {room}: view of {len(view)} messages "
                        f"(seqs {seqs[:3]}..{seqs[-3:]}) differs from history of {len(messages)}"
                    )
        raw_dups = 0
        for member in self.members:
            for seqs in member.client.raw.values():
                raw_dups += sum(1 for a, b in itertools.pairwise(seqs) if b <= a)

        recovery, first_failure = self._recovery()
        latencies = [r.finished - r.started for r in acked if r.finished is not None]
        errors = Counter(code for m in self.members for _, code in m.client.error_answers)
        return {
            "fault": fault,
            "sent": len(self.records),
            "acked": len(acked),
            "lost": len(lost) + len(mismatched) + gaps,
            "duplicated": history_dups + iterated_dups + raw_dups,
            "recovery_s": recovery,
            "unacked": len(self.records) - len(acked),
            "first_failure_after_fault_s": (
                round(first_failure - self.fault_at, 3)
                if first_failure is not None and self.fault_at is not None
                else None
            ),
            "send_p50_s": round(percentile(latencies, 0.5), 4),
            "send_max_s": round(max(latencies), 3) if latencies else None,
            "error_answers": dict(errors),
            "reconnects": sum(max(0, m.client.connections - 1) for m in self.members),
            "details": {
                "lost_ids": lost[:20],
                "mismatched_ids": mismatched[:20],
                "history_duplicates": history_dups,
                "iterated_duplicates": iterated_dups,
                "raw_socket_duplicates": raw_dups,
                "history_problems": history_problems,
                "iterated_gaps": gaps,
                "events_acked": sum(1 for r in self.event_records if r.ack is not None),
                "event_errors": dict(Counter(r.error for r in self.event_records if r.error)),
                "view_problems": view_problems[:20],
                "send_errors": dict(Counter(r.error for r in self.records if r.error)),
                "stored": {room: len(messages) for room, messages in histories.items()},
            },
        }

    def _failures(self) -> list[float]:
        """Times of client-visible failures at or after the fault (see the module docstring)."""
        since = self.fault_at if self.fault_at is not None else 0.0
        times = [t for m in self.members for t, _ in m.client.error_answers]
        times += [t for m in self.members for t in m.client.socket_ends]
        for r in self.records:
            if r.error is not None and r.finished is not None:
                times.append(r.finished)
            end = r.finished if r.finished is not None else time.monotonic()
            if end - r.started > STALL:
                times.append(r.started + STALL)
        return sorted(t for t in times if t >= since)

    def _recovery(self) -> tuple[float, float | None]:
        failures = self._failures()
        if not failures:
            return 0.0, None
        first = failures[0]
        successes = [
            r.finished
            for r in self.records
            if r.ack is not None and r.finished is not None and r.started >= first
        ]
        if not successes:
            return float("inf"), first
        return round(min(successes) - first, 3), first
