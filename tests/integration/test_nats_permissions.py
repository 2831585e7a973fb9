"""NATS is not an open door (issue 10, item 3; DESIGN.md rule 15; shared/nats_auth.py).

Each tier logs in with its own credentials, exactly as the services do, and tries what it must
not do: read the private signing keys or the password hashes, mint a service token, read other
tiers' replies or the delivery subjects, forge frames, create or delete streams (a stream that
*sources* the keys would copy them). Each attempt must be refused by nats-server with a
``Permissions Violation``, while the operator (the positive control) can do all of it. An
anonymous client and a wrong password are refused at connect.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client

from shared import room_shards, subjects
from shared.nats_auth import BACKEND, CHAT, GATEWAY, NOTIFY, OPERATOR, TIERS, inbox_prefix
from tests.conftest import NatsServer, Stack

KEYS_STREAM = f"KV_{subjects.KV_AUTH_KEYS}"
USERS_STREAM = f"KV_{subjects.KV_USERS}"
DENIED_WAIT = 2.0


class Tier:
    """One connection logged in as ``user``, recording the errors the server sends it."""

    def __init__(self, nc: Client, errors: list[str], user: str) -> None:
        self.nc = nc
        self.errors = errors
        self.user = user

    async def denied(self, attempt: Callable[[], Awaitable[Any]], fragment: str) -> None:
        """Run ``attempt`` (which may time out: a refused request is never answered) and assert
        that the server reported a permissions violation naming ``fragment``."""
        before = len(self.errors)
        try:
            await asyncio.wait_for(attempt(), timeout=DENIED_WAIT)
        except (TimeoutError, nats.errors.Error):
            pass
        deadline = asyncio.get_running_loop().time() + DENIED_WAIT
        wanted = fragment.lower()
        while not any(
            wanted in e.lower() and "permissions violation" in e.lower() for e in self.errors[before:]
        ):
            assert asyncio.get_running_loop().time() < deadline, (
                f"{self.user}: no permissions violation for {fragment!r}; errors: {self.errors[before:]}"
            )
            await asyncio.sleep(0.05)


@asynccontextmanager
async def login(server: NatsServer, user: str, password: str | None = None) -> AsyncIterator[Tier]:
    errors: list[str] = []

    async def error_cb(error: Exception) -> None:
        errors.append(str(error))

    nc = await nats.connect(
        server.client_url,
        user=user,
        password=password if password is not None else server.credentials.passwords[user],
        inbox_prefix=inbox_prefix(user),
        error_cb=error_cb,
        allow_reconnect=False,
        connect_timeout=3,
    )
    try:
        yield Tier(nc, errors, user)
    finally:
        await nc.close()


async def direct_get(nc: Client, stream: str, key_subject: str) -> Any:
    return await nc.request(f"$JS.API.DIRECT.GET.{stream}.{key_subject}", b"", timeout=0.3)


async def create_stream(nc: Client, name: str, config: dict[str, Any]) -> Any:
    return await nc.request(f"$JS.API.STREAM.CREATE.{name}", json.dumps(config).encode(), timeout=0.3)


async def subscribe_and_wait(nc: Client, subject: str) -> None:
    await nc.subscribe(subject)
    await nc.flush(timeout=0.3)
    await asyncio.sleep(0.3)


async def test_anonymous_and_wrong_password_clients_are_refused(stack: Stack) -> None:
    for options in (
        {},
        {"user": GATEWAY, "password": "not-the-password"},
        {"user": "mallory", "password": "x"},
    ):
        with pytest.raises((nats.errors.Error, OSError)) as refused:
            await nats.connect(
                stack.nats.client_url,
                allow_reconnect=False,
                connect_timeout=3,
                max_reconnect_attempts=0,
                **options,
            )
        assert "uthoriz" in repr(refused.value) or isinstance(refused.value, nats.errors.NoServersError)


async def test_the_operator_can_do_what_the_tiers_cannot(stack: Stack) -> None:
    """The positive control: the keys exist and each probe below works for the operator."""
    async with login(stack.nats, OPERATOR) as operator:
        reply = await direct_get(operator.nc, KEYS_STREAM, f"$KV.{subjects.KV_AUTH_KEYS}.signing")
        assert b"private_pem" in reply.data
        minted = await operator.nc.request(subjects.AUTH_SERVICE_TOKEN, b'{"name":"perm-probe"}', timeout=5)
        assert b"access_token" in minted.data
        assert operator.errors == []


@pytest.mark.parametrize("tier", [t for t in TIERS if t != OPERATOR])
async def test_no_tier_but_auth_reads_the_signing_keys_or_password_hashes(stack: Stack, tier: str) -> None:
    async with login(stack.nats, tier) as probe:
        if tier == "auth":
            reply = await direct_get(probe.nc, KEYS_STREAM, f"$KV.{subjects.KV_AUTH_KEYS}.signing")
            assert b"private_pem" in reply.data  # auth signs with it
            return
        await probe.denied(
            lambda: direct_get(probe.nc, KEYS_STREAM, f"$KV.{subjects.KV_AUTH_KEYS}.signing"), KEYS_STREAM
        )
        await probe.denied(
            lambda: probe.nc.request(f"$JS.API.STREAM.MSG.GET.{KEYS_STREAM}", b'{"seq":1}', timeout=0.3),
            KEYS_STREAM,
        )
        await probe.denied(
            lambda: direct_get(probe.nc, USERS_STREAM, f"$KV.{subjects.KV_USERS}.>"), USERS_STREAM
        )
        await probe.denied(lambda: subscribe_and_wait(probe.nc, f"$KV.{subjects.KV_AUTH_KEYS}.>"), "$KV")
        consumer = f"$JS.API.CONSUMER.CREATE.{KEYS_STREAM}"
        await probe.denied(lambda: probe.nc.request(consumer, b"{}", timeout=0.3), KEYS_STREAM)


ROOM_LOG = room_shards.stream_name(0)


@pytest.mark.parametrize("tier", [t for t in TIERS if t != OPERATOR])
async def test_no_tier_creates_changes_or_deletes_streams(stack: Stack, tier: str) -> None:
    """A stream that sources KV_natter_auth_keys would copy the keys: creating any stream is
    the operator's (shared/provisioning.py)."""
    sourcing = {"name": "STEAL", "subjects": ["steal.>"], "sources": [{"name": KEYS_STREAM}]}
    async with login(stack.nats, tier) as probe:
        await probe.denied(lambda: create_stream(probe.nc, "STEAL", sourcing), "STREAM.CREATE")
        await probe.denied(
            lambda: probe.nc.request(
                f"$JS.API.STREAM.UPDATE.{ROOM_LOG}",
                json.dumps({"name": ROOM_LOG, "sources": [{"name": KEYS_STREAM}]}).encode(),
                timeout=0.3,
            ),
            "STREAM.UPDATE",
        )
        await probe.denied(
            lambda: probe.nc.request(f"$JS.API.STREAM.DELETE.{ROOM_LOG}", b"", timeout=0.3),
            "STREAM.DELETE",
        )
        await probe.denied(
            lambda: probe.nc.request(f"$JS.API.STREAM.PURGE.{ROOM_LOG}", b"", timeout=0.3),
            "STREAM.PURGE",
        )
        if tier != CHAT:  # erasing single messages is how chat purges deleted text, nobody else
            await probe.denied(
                lambda: probe.nc.request(f"$JS.API.STREAM.MSG.DELETE.{ROOM_LOG}", b'{"seq":1}', timeout=0.3),
                "STREAM.MSG.DELETE",
            )


@pytest.mark.parametrize("tier", [GATEWAY, CHAT, NOTIFY, BACKEND, "auth"])
async def test_only_the_operator_mints_service_tokens(stack: Stack, tier: str) -> None:
    async with login(stack.nats, tier) as probe:
        await probe.denied(
            lambda: probe.nc.request(
                subjects.AUTH_SERVICE_TOKEN, b'{"name":"evil","role":"admin"}', timeout=1
            ),
            subjects.AUTH_SERVICE_TOKEN,
        )


async def test_the_gateway_asks_only_for_what_it_relays(stack: Stack) -> None:
    async with login(stack.nats, GATEWAY) as gateway:
        jwks = await gateway.nc.request(subjects.AUTH_JWKS, b"{}", timeout=5)  # allowed: public keys
        assert b'"keys"' in jwks.data
        for subject in (subjects.AUTH_LOOKUP, subjects.CHAT_ACCESS, "auth.anything", "chat.rooms.drop"):
            await gateway.denied(lambda s=subject: gateway.nc.request(s, b"{}", timeout=0.3), subject)
        # it may not read another tier's replies, nor write the buckets of others
        await gateway.denied(lambda: subscribe_and_wait(gateway.nc, "_INBOX.auth.>"), "_INBOX.auth")
        await gateway.denied(lambda: subscribe_and_wait(gateway.nc, "_INBOX.>"), "_INBOX")
        await gateway.denied(
            lambda: gateway.nc.request(f"$KV.{subjects.KV_ROOMS}.general", b"{}", timeout=0.3), "$KV"
        )
        log = room_shards.layout("general", 4)
        await gateway.denied(
            lambda: gateway.nc.request(log.message_subject(), b"{}", timeout=0.3), "roomlog."
        )


@pytest.mark.parametrize("tier", [CHAT, NOTIFY, BACKEND, "auth"])
async def test_only_the_gateway_receives_deliveries(stack: Stack, tier: str) -> None:
    async with login(stack.nats, tier) as probe:
        await probe.denied(lambda: subscribe_and_wait(probe.nc, "deliver.>"), "deliver.")
        await probe.denied(lambda: subscribe_and_wait(probe.nc, subjects.DELIVER_ALL), "deliver.")


async def test_tiers_cannot_forge_each_others_data(stack: Stack) -> None:
    async with login(stack.nats, NOTIFY) as notify:  # notify may not write a room's log
        log = room_shards.layout("general", 4)
        await notify.denied(lambda: notify.nc.request(log.message_subject(), b"{}", timeout=0.3), "roomlog.")
        await notify.denied(lambda: notify.nc.request(log.state_subject(1), b"{}", timeout=0.3), "roomview.")
        await notify.denied(
            lambda: notify.nc.publish(subjects.deliver_room("general"), b"{}"), "deliver.room"
        )
        # of the leases, notify holds only its dispatcher's: not the feed relay's of chat
        await notify.denied(
            lambda: notify.nc.request(f"$KV.{subjects.KV_LEASES}.feed-0", b"x", timeout=0.3), "feed-0"
        )
    async with login(stack.nats, CHAT) as chat:  # chat may not store notifications or revoke sessions
        await chat.denied(
            lambda: chat.nc.request(subjects.notifications_subject("someone"), b"{}", timeout=0.3), "notif."
        )
        await chat.denied(
            lambda: chat.nc.request(f"$KV.{subjects.KV_REVOCATIONS}.u.someone", b"{}", timeout=0.3), "$KV"
        )
    async with login(stack.nats, BACKEND) as backend:  # backend services: notifications only
        ok = await backend.nc.request(subjects.NOTIFY_BROADCAST, b'{"title":"t","message":"m"}', timeout=5)
        assert b"broadcasted" in ok.data
        await backend.denied(
            lambda: backend.nc.request(subjects.CHAT_SEND, b"{}", timeout=0.3), subjects.CHAT_SEND
        )
        await backend.denied(
            lambda: backend.nc.request(subjects.AUTH_LOGIN, b"{}", timeout=0.3), subjects.AUTH_LOGIN
        )
