"""What a benchmark run is: scenarios, targets, parameters, and the layout of sockets (pure).

A *layout* says which sockets exist, which user each belongs to, which room it joins and
whether it sends. It is computed once in the parent process and split between the load
generator's worker processes, so every process agrees on rooms and senders.

Scenarios (docs/benchmarks.md):

- ``fanout``: one room with ``members`` sockets; socket 0 also sends ``rate`` messages/s.
- ``rooms``: ``rooms`` rooms of ``room_size`` sockets; every socket sends ``rate`` messages/s
  (default 1).
- ``saturation``: ``fanout``, with the rate multiplied by ``step_factor`` after each step until
  p99 exceeds ``p99_limit_ms`` or a delivery is lost (or ``max_steps`` ran).
- ``idle``: ``connections`` authenticated sockets that only stay open (RSS per connection).
- ``connect``: authenticated connects per second (connect, authenticate, close; with
  ``connect_join``, connect, authenticate, join a room, close) for ``duration`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Scenario(StrEnum):
    """The benchmark scenarios."""

    fanout = "fanout"
    rooms = "rooms"
    saturation = "saturation"
    idle = "idle"
    connect = "connect"


class TargetKind(StrEnum):
    """What is measured: natter, or one of the references in ``benchmarks/reference/``."""

    natter = "natter"
    fastapi = "fastapi"
    socketio = "socketio"


#: Scenarios whose sockets send chat messages (measured in phases with a rate).
MESSAGING = frozenset({Scenario.fanout, Scenario.rooms, Scenario.saturation})
#: Most sockets one run may open (the gateway's default ``max_connections`` is 20 000).
MAX_SOCKETS = 20_000
#: Most natter gateway processes one run starts (``--gateways``).
MAX_GATEWAYS = 8
#: Longest measured phase, seconds; every run is bounded (DESIGN.md "Testing").
MAX_DURATION = 600.0


@dataclass(frozen=True)
class RunParams:
    """Parameters of one run (the CLI options of ``natter bench run``).

    Units: ``rate`` messages per second per sender; ``duration``, ``grace``, ``warmup`` seconds;
    ``p99_limit_ms`` milliseconds. ``workers`` load-generator processes; ``users`` accounts
    registered on natter (sockets share them round-robin). ``gateways``: natter gateway
    processes behind one NATS (load-generator worker ``i`` connects to gateway ``i mod
    gateways``); the references are one process by design and refuse it. Idle and connect
    always measure one gateway process (their targets are per gateway, docs/benchmarks.md).
    """

    scenario: Scenario
    target: TargetKind = TargetKind.natter
    members: int = 100
    rooms: int = 250
    room_size: int = 4
    rate: float | None = None
    duration: float = 10.0
    connections: int = 1000
    workers: int = 2
    users: int = 20
    grace: float = 5.0
    #: seconds of unmeasured sending at the first rate before the measured phases (cold paths:
    #: a room's first message, caches, connection pools), for every target alike.
    warmup: float = 2.0
    step_factor: float = 1.5
    max_steps: int = 8
    p99_limit_ms: float = 100.0
    connect_concurrency: int = 100
    churn_concurrency: int = 16
    nats_sync_always: bool = True
    quiet_wait: float = 0.0
    gateways: int = 1
    #: natter, messaging scenarios: the fraction of each sender's sends that are ``react``
    #: requests (protocol v2 room events) on its latest acked message instead of messages.
    reactions: float = 0.0
    #: connect: after authenticating, each connect also joins a room (one of
    #: ``churn_concurrency`` rooms, one per loop) before it closes.
    connect_join: bool = False

    @property
    def send_rate(self) -> float:
        """Messages per second per sender: ``rate`` or the scenario's default (fanout 20, rooms 1)."""
        if self.rate is not None:
            return self.rate
        return 1.0 if self.scenario is Scenario.rooms else 20.0

    def socket_count(self) -> int:
        """Sockets the layout opens (0 for ``connect``, which opens and closes its own)."""
        if self.scenario in (Scenario.fanout, Scenario.saturation):
            return self.members
        if self.scenario is Scenario.rooms:
            return self.rooms * self.room_size
        if self.scenario is Scenario.idle:
            return self.connections
        return 0

    def validate(self) -> None:
        """Check ranges.

        Raises:
            ValueError: with the option name and the allowed range.
        """
        checks: list[tuple[bool, str]] = [
            (1 <= self.members <= MAX_SOCKETS, f"--members must be 1..{MAX_SOCKETS}"),
            (1 <= self.rooms, "--rooms must be at least 1"),
            (1 <= self.room_size, "--room-size must be at least 1"),
            (self.rate is None or 0 < self.rate <= 10_000, "--rate must be in (0, 10000] messages/s"),
            (0.5 <= self.duration <= MAX_DURATION, f"--duration must be 0.5..{MAX_DURATION:g} seconds"),
            (1 <= self.connections <= MAX_SOCKETS, f"--connections must be 1..{MAX_SOCKETS}"),
            (1 <= self.workers <= 8, "--workers must be 1..8"),
            (1 <= self.users <= 1000, "--users must be 1..1000"),
            (0.5 <= self.grace <= 60, "--grace must be 0.5..60 seconds"),
            (0 <= self.warmup <= 60, "--warmup must be 0..60 seconds"),
            (self.step_factor > 1.0, "--step-factor must be more than 1"),
            (1 <= self.max_steps <= 30, "--max-steps must be 1..30"),
            (self.p99_limit_ms > 0, "--p99-limit-ms must be positive"),
            (1 <= self.connect_concurrency <= 1000, "--connect-concurrency must be 1..1000"),
            (1 <= self.churn_concurrency <= 1000, "--churn-concurrency must be 1..1000"),
            (0 <= self.quiet_wait <= 3600, "--quiet-wait must be 0..3600 seconds"),
            (1 <= self.gateways <= MAX_GATEWAYS, f"--gateways must be 1..{MAX_GATEWAYS}"),
            (0 <= self.reactions <= 0.5, "--reactions must be 0..0.5 (a fraction of the sends)"),
            (
                self.reactions == 0 or self.target is TargetKind.natter,
                "--reactions is natter's: the references have no reactions",
            ),
            (
                self.gateways == 1 or self.target is TargetKind.natter,
                "--gateways is natter's: the references are one process by design",
            ),
            (
                self.gateways == 1 or self.scenario in MESSAGING,
                "--gateways above 1 is for fanout, rooms, saturation (idle, connect: one gateway)",
            ),
            (
                self.gateways >= 1 and self.workers % self.gateways == 0,
                "--workers must be a multiple of --gateways (worker i connects to gateway i mod N)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.socket_count() > MAX_SOCKETS:
            raise ValueError(f"this run would open {self.socket_count()} sockets; at most {MAX_SOCKETS}")


@dataclass(frozen=True, slots=True)
class SocketPlan:
    """One socket of the layout: global ``index``, ``user`` (index into the token pool), the
    ``room`` it joins (None: none) and its ``sender_id`` (None: it only receives)."""

    index: int
    user: int
    room: str | None = None
    sender_id: int | None = None


@dataclass(frozen=True)
class Layout:
    """Every socket of a run, plus what the accounting needs: members per room and each
    sender's room."""

    sockets: list[SocketPlan]
    members: dict[str, int] = field(default_factory=dict)
    room_of_sender: dict[int, str] = field(default_factory=dict)


def room_name(run_id: str, suffix: str) -> str:
    """A room name valid under PROTOCOL.md section 3 (``^[a-z0-9][a-z0-9_-]{0,63}$``)."""
    name = f"bench-{run_id}-{suffix}".lower()
    if len(name) > 64:
        raise ValueError(name)
    return name


def build_layout(params: RunParams, run_id: str) -> Layout:
    """The sockets of ``params.scenario``; sockets use users ``index % params.users``.

    ``fanout``/``saturation``: one room, socket 0 is the only sender (and a member).
    ``rooms``: room ``r`` holds sockets ``r*room_size .. r*room_size+room_size-1``, all senders
    (consecutive sockets are distinct users as long as ``users >= room_size``).
    ``idle``: sockets without a room. ``connect``: no sockets.
    """
    users = params.users
    if params.scenario in (Scenario.fanout, Scenario.saturation):
        room = room_name(run_id, "fanout")
        sockets = [
            SocketPlan(index=i, user=i % users, room=room, sender_id=0 if i == 0 else None)
            for i in range(params.members)
        ]
        return Layout(sockets=sockets, members={room: params.members}, room_of_sender={0: room})
    if params.scenario is Scenario.rooms:
        sockets = []
        members: dict[str, int] = {}
        room_of_sender: dict[int, str] = {}
        for r in range(params.rooms):
            room = room_name(run_id, f"r{r}")
            members[room] = params.room_size
            for j in range(params.room_size):
                i = r * params.room_size + j
                sockets.append(SocketPlan(index=i, user=i % users, room=room, sender_id=i))
                room_of_sender[i] = room
        return Layout(sockets=sockets, members=members, room_of_sender=room_of_sender)
    if params.scenario is Scenario.idle:
        return Layout(sockets=[SocketPlan(index=i, user=i % users) for i in range(params.connections)])
    return Layout(sockets=[])


def split_round_robin(sockets: list[SocketPlan], workers: int) -> list[list[SocketPlan]]:
    """Deal sockets to ``workers`` lists like cards (socket 0, the fanout sender, to worker 0)."""
    return [sockets[w::workers] for w in range(workers)]


def is_reaction(counter: int, fraction: float) -> bool:
    """Whether send number ``counter`` (0, 1, 2...) of a sender is a reaction, for a share of
    ``fraction`` (0..1): exactly ``floor(n * fraction)`` of the first ``n`` sends are, evenly
    spread (send 0 never is, so there is a message to react to)."""
    return int((counter + 1) * fraction) > int(counter * fraction)


def saturation_rates(start: float, factor: float, steps: int) -> list[float]:
    """Rates of the saturation steps: ``start * factor**k`` for k in 0..steps-1, rounded to 0.1."""
    return [round(start * factor**k, 1) for k in range(steps)]
