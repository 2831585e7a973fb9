"""Posting as a service (PROTOCOL.md section 12) over HTTP and over NATS, against the real stack:
stored, ordered and idempotent like a socket's ``chat_message``, delivered to joined sockets,
and marked as a bot when a service posts."""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any

import httpx
import nats

from shared import subjects
from shared.nats_auth import BACKEND
from tests.conftest import NatsServer, Stack
from tests.support import User, WsClient, connect, join, register, service_token, unique_name


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def next_message(ws: WsClient, room: str) -> dict[str, Any]:
    while True:
        frame = await ws.recv()
        if frame.get("type") == "message" and frame.get("room") == room:
            return dict(frame["data"])


async def member_in(stack: Stack, http: httpx.AsyncClient, room: str) -> tuple[User, WsClient]:
    user = await register(http)
    ws = await connect(stack.ws_url, user.access_token)
    await join(ws, room)
    return user, ws


async def test_a_service_posts_as_a_bot_once_per_client_msg_id(stack: Stack, nats_server: NatsServer) -> None:
    token = await service_token(nats_server.url, name="deploybot")
    room = unique_name("post")
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        alice, ws = await member_in(stack, http, room)
        first = await ws.request({"type": "chat_message", "room": room, "message": "before"})
        body = {"message": "  deploy 42 finished  ", "client_msg_id": "deploy-42"}
        posted = await http.post(f"/api/rooms/{room}/messages", json=body, headers=bearer(token))
        assert posted.status_code == 201, posted.text
        ack = posted.json()
        assert (
            ack["type"] == "ack"
            and ack["seq"] == first["seq"] + 1
            and ack["message_id"] == f"{room}:{ack['seq']}"
        )
        delivered = await next_message(ws, room)
        while delivered["seq"] != ack["seq"]:
            delivered = await next_message(ws, room)
        assert delivered["user_id"] == "svc:deploybot" and delivered["username"] == "deploybot"
        assert delivered["bot"] is True and delivered["message"] == "deploy 42 finished"
        again = await http.post(f"/api/rooms/{room}/messages", json=body, headers=bearer(token))
        assert again.status_code == 200 and again.json() == ack
        after = await ws.request({"type": "chat_message", "room": room, "message": "after"})
        assert after["seq"] == ack["seq"] + 1  # the retry stored nothing
        page = (await http.get(f"/api/rooms/{room}/messages", headers=bearer(alice.access_token))).json()
        assert [m["message"] for m in page["messages"]] == ["before", "deploy 42 finished", "after"]
        await ws.close()


async def test_a_service_posts_into_a_private_room_and_not_into_a_missing_one(
    stack: Stack, nats_server: NatsServer
) -> None:
    token = await service_token(nats_server.url, name="alerts")
    room = unique_name("priv")
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        owner = await register(http)
        created = await http.post(
            "/api/rooms", json={"name": room, "private": True}, headers=bearer(owner.access_token)
        )
        assert created.status_code == 201
        ws = await connect(stack.ws_url, owner.access_token)
        await join(ws, room)
        posted = await http.post(
            f"/api/rooms/{room}/messages", json={"message": "disk full"}, headers=bearer(token)
        )
        assert posted.status_code == 201, posted.text
        assert (await next_message(ws, room))["message"] == "disk full"
        missing = await http.post(
            f"/api/rooms/{unique_name('none')}/messages", json={"message": "x"}, headers=bearer(token)
        )
        assert missing.status_code == 404 and missing.json()["code"] == "room_not_found"
        await ws.close()


async def test_a_user_token_posts_as_the_user_where_they_may_send(stack: Stack) -> None:
    room = unique_name("post")
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        alice, ws = await member_in(stack, http, room)
        bob = await register(http)
        posted = await http.post(
            f"/api/rooms/{room}/messages",
            json={"message": "from http", "reply_to": None},
            headers=bearer(bob.access_token),
        )
        assert posted.status_code == 201, posted.text
        data = await next_message(ws, room)
        assert data["user_id"] == bob.user_id and data["username"] == bob.username and "bot" not in data
        private = unique_name("priv")
        await http.post(
            "/api/rooms", json={"name": private, "private": True}, headers=bearer(alice.access_token)
        )
        refused = await http.post(
            f"/api/rooms/{private}/messages", json={"message": "let me in"}, headers=bearer(bob.access_token)
        )
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        empty = await http.post(
            f"/api/rooms/{room}/messages", json={"message": "   "}, headers=bearer(bob.access_token)
        )
        assert empty.status_code == 422
        await ws.close()


async def test_backend_services_post_over_nats(stack: Stack, nats_server: NatsServer) -> None:
    room = unique_name("post")
    login = nats_server.credentials.login(BACKEND)
    nc = await nats.connect(
        nats_server.client_url, user=login.user, password=login.password, inbox_prefix=login.inbox_prefix
    )
    async with httpx.AsyncClient(base_url=stack.base_url) as http, contextlib.AsyncExitStack() as cleanup:
        cleanup.push_async_callback(nc.close)
        _, ws = await member_in(stack, http, room)
        cmid = uuid.uuid4().hex
        body = {"room": room, "message": "nightly report ready", "client_msg_id": cmid, "service": "reports"}
        reply = await nc.request(subjects.API_ROOMS_POST, json.dumps(body).encode(), timeout=5)
        ack = json.loads(reply.data)
        assert ack["type"] == "ack" and ack["client_msg_id"] == cmid
        data = await next_message(ws, room)
        assert data["seq"] == ack["seq"] and data["user_id"] == "svc:reports" and data["bot"] is True
        repeat = json.loads(
            (await nc.request(subjects.API_ROOMS_POST, json.dumps(body).encode(), timeout=5)).data
        )
        assert repeat == ack
        bad = await nc.request(subjects.API_ROOMS_POST, json.dumps({"room": room}).encode(), timeout=5)
        assert bad.headers is not None and bad.headers.get("Nats-Service-Error-Code") == "422"
        await ws.close()
