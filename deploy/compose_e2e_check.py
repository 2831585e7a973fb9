"""End-to-end checks of the compose deployment against real containers (run by .ci/compose-e2e).

Everything goes through the load balancer's published loopback port, as a client would; the
container engine (``podman`` or ``docker``) is used only to look inside: each gateway's own
``/health`` (``exec`` in its container), minting a service token (``natter service-token``) and
restarting a gateway container. Containers are found by their compose labels
(``com.docker.compose.project`` / ``com.docker.compose.service``), never by a fixed name.

Two phases, sharing a JSON state file:

``live``
    two users register and log in; their sockets land on two different gateways (sockets are
    opened until both gateways are seen, told apart by each gateway's ``/health`` ``gateway_id``
    and ``active_connections``); both join a room and exchange messages across the gateways; a
    notification sent over the HTTP API with a service token reaches the user's socket; one
    gateway container is restarted while the other user keeps sending: the restarted gateway's
    socket is closed 1012, the client reconnects through the load balancer, joins with ``since``
    and has every acknowledged message exactly once, in ``seq`` order.
``history``
    after ``compose down`` and ``up`` (the NATS volume kept): both users log in again, the room's
    history is exactly the acknowledged messages, the notification is still stored, and the next
    message continues the room's ``seq``.

Usage::

    python deploy/compose_e2e_check.py live --url http://127.0.0.1:8000 --project natter-e2e \
        --state /tmp/state.json [--engine podman]
    python deploy/compose_e2e_check.py history --url ... --project ... --state ...

Exit status 0 when every check passed; 1 with a ``FAILED:`` line naming the check otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import re
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

logger = logging.getLogger("compose_e2e")

PASSWORD = "compose e2e password 1"
#: Grace for ``restart``: the gateway closes its sockets and drains within uvicorn's 10 s.
RESTART_GRACE_SECONDS = 30
HEALTH_SCRIPT = (
    "import sys, urllib.request; "
    "sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3).read().decode())"
)


class CheckFailed(Exception):
    """A check did not hold; the message says which and what was seen."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`CheckFailed` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(message)


def redact(text: str) -> str:
    """``text`` with the password of any ``scheme://user:password@`` URL replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\1***@", text)


_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def unique(prefix: str) -> str:
    """A name valid as a username and as a room: ``prefix`` + 10 hex digits."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


# --- the container engine ------------------------------------------------------------------------
class Engine:
    """``podman``/``docker`` commands for the containers of one compose project."""

    def __init__(self, command: str, project: str) -> None:
        self.command = command
        self.project = project

    async def run(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``<engine> args...``; return stdout.

        Raises:
            CheckFailed: non-zero exit or no exit within ``timeout`` seconds.
        """
        proc = await asyncio.create_subprocess_exec(
            self.command,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise CheckFailed(f"`{self.command} {args[0]}` did not finish within {timeout:g}s") from None
        if proc.returncode != 0:
            error = redact(stderr.decode()[-500:].strip())
            raise CheckFailed(f"`{self.command} {args[0]} ...` exited {proc.returncode}: {error}")
        return stdout.decode()

    async def containers(self, service: str) -> list[str]:
        """Names of the running containers of compose service ``service``, sorted."""
        out = await self.run(
            "ps",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
            "--format",
            "{{.Names}}",
        )
        return sorted(line.strip() for line in out.splitlines() if line.strip())

    async def gateway_health(self, container: str) -> dict[str, Any]:
        """The ``/health`` body of the gateway in ``container``, read from inside it."""
        body = json.loads(await self.run("exec", container, "python3", "-c", HEALTH_SCRIPT, timeout=20))
        check(isinstance(body, dict), f"/health of {container} is not an object: {body!r}")
        return dict(body)

    async def service_token(self, container: str, name: str) -> str:
        """``natter service-token NAME`` run inside ``container`` as the NATS operator (the only
        user allowed to ask ``auth.service_token``; its password comes from this process's
        ``NATTER_NATS_PASSWORD_OPERATOR``, as compose gives it to the ``provision`` service)."""
        login = ["-e", "NATTER_NATS_USER=operator"]
        login += ["-e", f"NATTER_NATS_PASSWORD={os.environ.get('NATTER_NATS_PASSWORD_OPERATOR', '')}"]
        out = await self.run("exec", *login, container, "natter", "service-token", name, timeout=30)
        token = out.strip()
        check(token.count(".") == 2, f"natter service-token printed no JWT: {out[:80]!r}")
        return token

    async def restart(self, container: str) -> None:
        """Restart ``container`` (SIGTERM, up to the grace period, then start again)."""
        await self.run(
            "restart", "-t", str(RESTART_GRACE_SECONDS), container, timeout=RESTART_GRACE_SECONDS + 60
        )


# --- a WebSocket client --------------------------------------------------------------------------
class Socket:
    """One client socket through the load balancer; JSON frames, requests matched by ``id``."""

    def __init__(self, conn: ClientConnection, label: str) -> None:
        self.conn = conn
        self.label = label
        self.pending: deque[dict[str, Any]] = deque()

    @classmethod
    async def open(cls, ws_url: str, token: str, label: str) -> Socket:
        """Connect with ``?token=`` and read ``auth_success`` and the ``notifications`` summary."""
        conn = await websockets.connect(f"{ws_url}?token={token}", open_timeout=10, max_size=2**20)
        sock = cls(conn, label)
        first = await sock.next_frame(10)
        check(first.get("type") == "auth_success", f"{label}: expected auth_success, got {first}")
        summary = await sock.next_frame(10)
        check(summary.get("type") == "notifications", f"{label}: expected notifications, got {summary}")
        return sock

    async def next_frame(self, timeout: float) -> dict[str, Any]:
        """The next frame (stashed ones first).

        Raises:
            TimeoutError: nothing within ``timeout`` seconds.
            ConnectionClosed: the server closed the socket.
        """
        if self.pending:
            return self.pending.popleft()
        raw = await asyncio.wait_for(self.conn.recv(), timeout)
        check(isinstance(raw, str), f"{self.label}: binary frame {raw!r}")
        frame = json.loads(raw)
        check(isinstance(frame, dict), f"{self.label}: frame is not an object: {raw!r}")
        return dict(frame)

    async def request(self, frame: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send ``frame`` with a fresh ``id``; return the answer echoing it (others are stashed)."""
        request_id = uuid.uuid4().hex[:12]
        await self.conn.send(json.dumps({**frame, "id": request_id}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CheckFailed(f"{self.label}: no answer to {frame['type']} within {timeout:g}s")
            raw = await asyncio.wait_for(self.conn.recv(), remaining)
            answer = json.loads(raw)
            if answer.get("id") == request_id:
                return dict(answer)
            self.pending.append(answer)

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Read frames until one satisfies ``predicate`` (others are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CheckFailed(f"{self.label}: no {what} within {timeout:g}s")
            try:
                frame = await self.next_frame(remaining)
            except TimeoutError:
                continue
            if predicate(frame):
                return frame

    async def close(self) -> None:
        await self.conn.close()


# --- state shared by the two phases --------------------------------------------------------------
@dataclass
class Sent:
    """An acknowledged message: what history must hold."""

    seq: int
    message: str
    client_msg_id: str
    username: str


@dataclass
class State:
    """What ``live`` leaves for ``history`` (JSON file)."""

    users: list[str] = field(default_factory=list)
    room: str = ""
    sent: list[Sent] = field(default_factory=list)
    notification_id: str = ""

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> State:
        data = json.loads(path.read_text())
        return cls(
            users=list(data["users"]),
            room=str(data["room"]),
            sent=[Sent(**item) for item in data["sent"]],
            notification_id=str(data["notification_id"]),
        )


# --- HTTP helpers --------------------------------------------------------------------------------
async def register_and_login(http: httpx.AsyncClient, username: str) -> dict[str, Any]:
    """Register ``username`` and log in; the login body (``access_token``, ``user_id``...)."""
    response = await http.post("/api/auth/register", json={"username": username, "password": PASSWORD})
    check(response.status_code == 201, f"register {username}: {response.status_code} {response.text}")
    return await login(http, username)


async def login(http: httpx.AsyncClient, username: str) -> dict[str, Any]:
    """Log in with the shared test password; the login body."""
    response = await http.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    check(response.status_code == 200, f"login {username}: {response.status_code} {response.text}")
    body = dict(response.json())
    check(bool(body.get("access_token")), f"login {username}: no access_token")
    return body


async def retry(what: str, attempt: Callable[[], Awaitable[Any]], timeout: float) -> Any:
    """Call ``attempt`` until it returns without raising, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.25
    while True:
        try:
            return await attempt()
        except (OSError, TimeoutError, ConnectionClosed, CheckFailed, httpx.HTTPError) as error:
            if time.monotonic() + delay > deadline:
                raise CheckFailed(f"{what}: still failing after {timeout:g}s: {error!r}") from error
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


# --- phase 1: live ---------------------------------------------------------------------------------
class Live:
    """The ``live`` phase (see the module docstring)."""

    def __init__(self, url: str, engine: Engine, http: httpx.AsyncClient) -> None:
        self.url = url
        self.ws_url = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/ws"
        self.engine = engine
        self.http = http
        self.state = State()
        self.tokens: dict[str, str] = {}

    async def gateway_map(self) -> dict[str, dict[str, Any]]:
        """container name -> that gateway's ``/health`` body."""
        containers = await self.engine.containers("gateway")
        bodies = await asyncio.gather(*(self.engine.gateway_health(c) for c in containers))
        return dict(zip(containers, bodies, strict=True))

    async def open_counted(self, username: str) -> tuple[Socket, str]:
        """Open a socket for ``username``; return it and the container of the gateway it landed
        on (the one whose ``active_connections`` went up by one)."""
        before = await self.gateway_map()
        sock = await Socket.open(self.ws_url, self.tokens[username], username)
        after = await self.gateway_map()
        grown = [
            name
            for name in after
            if after[name]["active_connections"] == before.get(name, {}).get("active_connections", 0) + 1
        ]
        check(len(grown) == 1, f"cannot tell which gateway took {username}'s socket: {before} -> {after}")
        return sock, grown[0]

    async def run(self) -> State:
        response = await self.http.get("/health")
        check(response.status_code == 200, f"/health through nginx: {response.status_code}")
        check(response.json().get("nats") == "connected", f"/health: {response.text}")
        logger.info("ok: /health through the load balancer: %s", response.json()["status"])

        gateways = await self.gateway_map()
        ids = {body["gateway_id"] for body in gateways.values()}
        check(len(gateways) >= 2, f"expected at least 2 gateway containers, found {sorted(gateways)}")
        check(len(ids) == len(gateways), f"gateway ids are not distinct: {gateways}")
        check(all(b["active_connections"] == 0 for b in gateways.values()), f"sockets left: {gateways}")
        logger.info("ok: %d gateways, ids %s", len(gateways), sorted(ids))

        alice, bob = unique("alice_"), unique("bob_")
        self.state.users = [alice, bob]
        for name in (alice, bob):
            self.tokens[name] = (await register_and_login(self.http, name))["access_token"]
        response = await self.http.post("/api/auth/login", json={"username": alice, "password": "wrong pass"})
        check(response.status_code == 401, f"wrong password: {response.status_code}")
        logger.info("ok: registered and logged in %s and %s", alice, bob)
        await self.forged_forwarded_for()

        alice_sock, alice_gw = await self.open_counted(alice)
        extra: list[Socket] = []
        bob_sock: Socket | None = None
        bob_gw = ""
        for _ in range(6):  # least_conn puts the next socket elsewhere; allow a few tries
            sock, where = await self.open_counted(bob)
            if where != alice_gw:
                bob_sock, bob_gw = sock, where
                break
            extra.append(sock)
        check(bob_sock is not None, f"every socket of {bob} landed on {alice_gw}, the gateway of {alice}")
        assert bob_sock is not None
        for sock in extra:
            await sock.close()
        gateways = await self.gateway_map()
        check(
            gateways[alice_gw]["gateway_id"] != gateways[bob_gw]["gateway_id"],
            f"{alice} and {bob} are on the same gateway",
        )
        logger.info(
            "ok: %s on %s (%s), %s on %s (%s)",
            alice,
            alice_gw,
            gateways[alice_gw]["gateway_id"],
            bob,
            bob_gw,
            gateways[bob_gw]["gateway_id"],
        )

        room = unique("e2e-")
        self.state.room = room
        for sock in (alice_sock, bob_sock):
            joined = await sock.request({"type": "join", "room": room})
            check(joined.get("type") == "joined", f"{sock.label} join: {joined}")
        await self.exchange(alice_sock, bob_sock, alice, bob)
        await self.notification(bob_sock, bob, alice)
        await self.restart_gateway(alice_sock, bob_sock, alice, bob, bob_gw)
        await alice_sock.close()
        return self.state

    async def forged_forwarded_for(self) -> None:
        """A client cannot pick its throttling address: failed logins that each claim another
        address in ``X-Forwarded-For`` all count against the address nginx saw, so the sixth
        attempt is slowed (429); the right password still gets through after ``Retry-After``."""
        victim = unique("forged_")
        await register_and_login(self.http, victim)
        statuses = []
        for index in range(6):
            response = await self.http.post(
                "/api/auth/login",
                json={"username": victim, "password": "wrong pass"},
                headers={"X-Forwarded-For": f"198.51.100.{index + 1}"},
            )
            statuses.append(response.status_code)
        check(statuses[:5] == [401] * 5, f"wrong passwords with forged addresses: {statuses}")
        check(statuses[5] == 429, f"forged X-Forwarded-For was believed (no throttling): {statuses}")
        wait = int(response.headers.get("Retry-After", "1"))
        check(1 <= wait <= 60, f"Retry-After {wait}")
        await asyncio.sleep(wait + 0.2)
        right = await self.http.post("/api/auth/login", json={"username": victim, "password": PASSWORD})
        check(right.status_code == 200, f"the right password after Retry-After: {right.status_code}")
        logger.info(
            "ok: forged X-Forwarded-For not believed (%s), right password passes after %ds", statuses, wait
        )

    async def send(self, sock: Socket, username: str, text: str) -> Sent:
        """Send one chat message and return its ack as a :class:`Sent` (recorded in the state)."""
        client_msg_id = uuid.uuid4().hex
        ack = await sock.request(
            {"type": "chat_message", "room": self.state.room, "message": text, "client_msg_id": client_msg_id}
        )
        check(ack.get("type") == "ack", f"{username} send: {ack}")
        check(ack.get("client_msg_id") == client_msg_id, f"ack for another message: {ack}")
        sent = Sent(seq=int(ack["seq"]), message=text, client_msg_id=client_msg_id, username=username)
        self.state.sent.append(sent)
        return sent

    async def expect_message(self, sock: Socket, sent: Sent) -> None:
        """``sock`` receives the room's ``message`` frame for ``sent``."""
        frame = await sock.wait_for(
            lambda f: f.get("type") == "message" and f["data"]["seq"] == sent.seq, f"message seq {sent.seq}"
        )
        data = frame["data"]
        check(
            (data["message"], data["client_msg_id"], data["username"])
            == (sent.message, sent.client_msg_id, sent.username),
            f"{sock.label}: message seq {sent.seq} differs: {data} vs {sent}",
        )

    async def exchange(self, alice_sock: Socket, bob_sock: Socket, alice: str, bob: str) -> None:
        """Messages from each side arrive, in order, on both gateways' sockets."""
        sent = [await self.send(alice_sock, alice, f"hello {i} from {alice}") for i in range(3)]
        sent.append(await self.send(bob_sock, bob, f"hi from {bob}"))
        seqs = [item.seq for item in sent]
        check(seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"seqs not contiguous: {seqs}")
        for item in sent:
            await self.expect_message(bob_sock, item)
            await self.expect_message(alice_sock, item)
        logger.info("ok: %d messages exchanged across the two gateways, seq %s", len(sent), seqs)

    async def notification(self, bob_sock: Socket, bob: str, alice: str) -> None:
        """A notification sent with a service token over HTTP reaches bob's socket."""
        auth = await self.engine.containers("auth_service")
        check(bool(auth), "no auth_service container")
        # Retried: a new process in a container resolves `nats` through the engine's DNS server,
        # which drops a query now and then (aardvark-dns while it reloads).
        token: str = await retry(
            "natter service-token", functools.partial(self.engine.service_token, auth[0], "ci"), timeout=90
        )
        response = await self.http.post(
            "/api/notifications/send",
            headers={"Authorization": f"Bearer {self.tokens[alice]}"},
            json={"username": bob, "title": "nope", "message": "user tokens may not send"},
        )
        check(response.status_code == 403, f"user token on notifications/send: {response.status_code}")
        response = await self.http.post(
            "/api/notifications/send",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "username": bob,
                "title": "Compose e2e",
                "message": "hello from CI",
                "notification_type": "success",
            },
        )
        check(response.status_code == 202, f"notifications/send: {response.status_code} {response.text}")
        notification_id = str(response.json()["id"])
        frame = await bob_sock.wait_for(
            lambda f: f.get("type") == "notification" and f["data"]["id"] == notification_id,
            f"notification {notification_id}",
        )
        check(frame["data"]["message"] == "hello from CI", f"notification body: {frame}")
        self.state.notification_id = notification_id
        logger.info(
            "ok: notification %s (service token minted in %s) reached %s", notification_id, auth[0], bob
        )

    async def restart_gateway(
        self, alice_sock: Socket, bob_sock: Socket, alice: str, bob: str, bob_gw: str
    ) -> None:
        """Restart bob's gateway while alice (on the other one) keeps sending; bob resumes with
        ``join`` ``since`` and misses nothing, sees nothing twice."""
        old_id = (await self.engine.gateway_health(bob_gw))["gateway_id"]
        last_seen = self.state.sent[-1].seq
        first_new = len(self.state.sent)
        stop_sending = asyncio.Event()

        async def keep_sending() -> None:
            index = 0
            while not stop_sending.is_set():
                await self.send(alice_sock, alice, f"during restart {index}")
                index += 1
                await asyncio.sleep(0.2)

        started = time.monotonic()
        sender = asyncio.create_task(keep_sending())
        restart = asyncio.create_task(self.engine.restart(bob_gw))
        try:
            await bob_sock.wait_for(lambda f: False, "close", timeout=RESTART_GRACE_SECONDS)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            check(code == 1012, f"{bob}'s socket closed with {code}, expected 1012 (service restart)")
        else:  # pragma: no cover - wait_for with a false predicate only ends by raising
            raise CheckFailed("unreachable")
        logger.info("ok: %s's socket closed 1012 after %.1fs", bob, time.monotonic() - started)

        async def reconnect() -> Socket:
            return await Socket.open(self.ws_url, self.tokens[bob], f"{bob}#2")

        bob2: Socket = await retry(f"{bob} reconnect", reconnect, timeout=60)
        joined = await bob2.request({"type": "join", "room": self.state.room, "since": last_seen})
        check(joined.get("type") == "joined", f"rejoin: {joined}")
        check(joined.get("recovered") is True, f"rejoin with since={last_seen} not recovered: {joined}")
        seen = [m["seq"] for m in joined["messages"]]
        logger.info(
            "ok: %s reconnected after %.1fs, recovered %d messages since seq %d",
            bob,
            time.monotonic() - started,
            len(seen),
            last_seen,
        )
        await restart
        await asyncio.sleep(1.0)  # a few more messages after the restart finished
        stop_sending.set()
        await sender
        for item in [*self.state.sent[first_new:], await self.send(alice_sock, alice, "after restart")]:
            if item.seq not in seen:
                frame = await bob2.wait_for(
                    lambda f: f.get("type") == "message", f"message seq {item.seq} after rejoin"
                )
                seen.append(frame["data"]["seq"])
        expected = [item.seq for item in self.state.sent if item.seq > last_seen]
        check(seen == expected, f"{bob} after the restart saw seqs {seen}, expected exactly {expected}")
        check(len(expected) >= 5, f"too few messages during the restart to mean anything: {expected}")
        logger.info("ok: %s has all %d messages sent around the restart, in order, once", bob, len(expected))

        async def restarted_healthy() -> str:
            body = await self.engine.gateway_health(bob_gw)
            check(body.get("status") == "healthy", f"{bob_gw}: {body}")
            return str(body["gateway_id"])

        new_id = await retry(f"{bob_gw} healthy again", restarted_healthy, timeout=60)
        check(new_id != old_id, f"{bob_gw} kept gateway id {old_id}: not restarted?")
        logger.info("ok: %s restarted as %s (was %s)", bob_gw, new_id, old_id)
        await bob2.close()


# --- phase 2: history after down/up ----------------------------------------------------------------
async def verify_history(url: str, http: httpx.AsyncClient, state: State) -> None:
    """The ``history`` phase (see the module docstring)."""
    ws_url = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/ws"
    alice, bob = state.users
    tokens: dict[str, str] = {}
    for name in (alice, bob):
        body = await retry(f"login {name} after restart", functools.partial(login, http, name), timeout=60)
        tokens[name] = body["access_token"]
    logger.info("ok: %s and %s log in after compose down/up", alice, bob)

    response = await http.get(
        f"/api/rooms/{state.room}/messages",
        params={"limit": 100},
        headers={"Authorization": f"Bearer {tokens[alice]}"},
    )
    check(response.status_code == 200, f"history: {response.status_code} {response.text}")
    stored = [
        (m["seq"], m["message"], m["client_msg_id"], m["username"]) for m in response.json()["messages"]
    ]
    expected = [(s.seq, s.message, s.client_msg_id, s.username) for s in state.sent]
    check(stored == expected, f"history after down/up differs:\n stored   {stored}\n expected {expected}")
    logger.info("ok: history of %s survived: %d messages, seq 1..%d", state.room, len(stored), stored[-1][0])

    response = await http.get("/api/notifications", headers={"Authorization": f"Bearer {tokens[bob]}"})
    check(response.status_code == 200, f"notifications: {response.status_code} {response.text}")
    ids = [item["id"] for item in response.json()["items"]]
    check(state.notification_id in ids, f"notification {state.notification_id} lost; have {ids}")
    logger.info("ok: notification %s survived", state.notification_id)

    sock = await retry("socket after restart", lambda: Socket.open(ws_url, tokens[alice], alice), timeout=60)
    joined = await sock.request({"type": "join", "room": state.room, "since": 0})
    check([m["seq"] for m in joined["messages"]] == [e[0] for e in expected], f"join since=0: {joined}")
    ack = await sock.request(
        {
            "type": "chat_message",
            "room": state.room,
            "message": "after down/up",
            "client_msg_id": uuid.uuid4().hex,
        }
    )
    check(ack.get("seq") == expected[-1][0] + 1, f"seq did not continue: {ack} after {expected[-1][0]}")
    await sock.close()
    logger.info("ok: the room's seq continues at %d", ack["seq"])


# --- entry point ---------------------------------------------------------------------------------
#: What Prometheus must have from each tier (compose.metrics.yaml): job -> (targets up, a series
#: of natter's that the job exposes).
PROMETHEUS_EXPECTS: dict[str, tuple[int, str]] = {
    "gateway": (2, "natter_gateway_connections"),
    "auth": (1, 'natter_service_requests_total{service="auth"}'),
    "chat": (2, 'natter_service_requests_total{service="chat",endpoint="chat.send"}'),
    "notify": (1, 'natter_consumer_pending{consumer="notify-mentions"}'),
}


async def verify_metrics(prometheus: str) -> None:
    """Prometheus scrapes every replica of every tier (``up`` is 1 for each) and holds natter's
    own series of each (asked through its HTTP API, ``/api/v1/query``)."""
    async with httpx.AsyncClient(base_url=prometheus.rstrip("/"), timeout=10) as prom:

        async def query(expr: str) -> list[dict[str, Any]]:
            answer = await prom.get("/api/v1/query", params={"query": expr})
            check(answer.status_code == 200, f"prometheus {expr}: {answer.status_code} {answer.text[:200]}")
            body = answer.json()
            check(body.get("status") == "success", f"prometheus {expr}: {body}")
            return list(body["data"]["result"])

        async def everything_scraped() -> None:
            for job, (targets, series) in PROMETHEUS_EXPECTS.items():
                up = await query(f'up{{job="{job}"}}')
                healthy = [r for r in up if r["value"][1] == "1"]
                check(len(healthy) == targets, f"job {job}: {len(healthy)} of {targets} targets up ({up})")
                found = await query(series)
                check(bool(found), f"job {job}: no {series} in Prometheus")
                logger.info("prometheus: %s: %d targets up, %s present", job, targets, series)

        await retry("every tier's series in Prometheus", everything_scraped, timeout=90)


async def main(args: argparse.Namespace) -> None:
    url = args.url.rstrip("/")
    async with httpx.AsyncClient(base_url=url, timeout=15) as http:
        await retry("GET /health through the load balancer", lambda: healthy(http), timeout=60)
        if args.phase == "metrics":
            check(bool(args.prometheus), "--prometheus is required for the metrics phase")
            await verify_metrics(args.prometheus)
        elif args.phase == "live":
            state = await Live(url, Engine(args.engine, args.project), http).run()
            state.save(args.state)
        else:
            await verify_history(url, http, State.load(args.state))


async def healthy(http: httpx.AsyncClient) -> None:
    """One ``GET /health`` through nginx that answers 200."""
    response = await http.get("/health")
    check(response.status_code == 200, f"/health: {response.status_code} {response.text[:200]}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=["live", "history", "metrics"])
    parser.add_argument("--prometheus", default="", help="metrics: Prometheus' URL (compose.metrics.yaml)")
    parser.add_argument("--url", required=True, help="the load balancer, e.g. http://127.0.0.1:8000")
    parser.add_argument("--project", required=True, help="compose project name")
    parser.add_argument(
        "--state", type=Path, default=Path("state.json"), help="JSON file written by live, read by history"
    )
    parser.add_argument("--engine", default="podman", help="podman or docker")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for the whole phase")
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    """Run one phase; 0 when every check passed, 1 otherwise."""
    logging.basicConfig(level=logging.INFO, format="[check %(asctime)s] %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    started = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(main(args), args.timeout))
    except CheckFailed as error:
        logger.error("FAILED (%s): %s", args.phase, error)
        return 1
    except TimeoutError:
        logger.error("FAILED (%s): did not finish within %gs", args.phase, args.timeout)
        return 1
    except Exception:
        logger.exception("FAILED (%s): unexpected error", args.phase)
        return 1
    logger.info("PASSED (%s) in %.1fs", args.phase, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
