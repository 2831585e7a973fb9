"""The gateway bus keeps a user's delivery subscription for ``user_linger`` seconds after the
user's last local socket, against a real nats-server (no gateway process needed)."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

from gateway.bus import Bus
from gateway.hub import Hub
from gateway.metrics import Metrics
from shared import subjects
from tests.support import unique_name


class Socket:
    """A hub subscriber that records what it is sent."""

    def __init__(self, user_id: str) -> None:
        self.conn_id = unique_name("c")
        self.user_id = user_id
        self.frames: list[bytes] = []

    def enqueue(self, frame: object) -> None:
        self.frames.append(frame.payload)  # type: ignore[attr-defined]


async def _pushed(nc: Client, user_id: str, payload: bytes) -> None:
    await nc.publish(subjects.deliver_user(user_id), payload)
    await nc.flush()


async def _subscribed(nc: Client, *, linger: float) -> tuple[Hub, Bus, str, Socket]:
    """A bus with ``linger`` and one user's socket, its ``deliver.user`` subscription made."""
    hub = Hub()
    bus = Bus(nc, hub, Metrics(), request_timeout=2, gap_wait=0.1, user_linger=linger)
    user = unique_name("u")
    socket = Socket(user)
    hub.add_user_socket(socket)
    await bus.subscribe_user(user)
    return hub, bus, user, socket


async def test_subscription_lingers_then_goes_and_a_reconnect_revives_it(nc: Client) -> None:
    hub, bus, user, first = await _subscribed(nc, linger=0.4)
    await _pushed(nc, user, b"one")
    await asyncio.sleep(0.1)
    assert first.frames == [b"one"]

    hub.remove_user_socket(first)
    bus.release_user(user)
    assert bus.user_subscriptions == 1  # lingering
    await asyncio.sleep(0.2)
    again = Socket(user)  # the user reconnects within the linger: same subscription, no SUB
    hub.add_user_socket(again)
    await bus.subscribe_user(user)
    await asyncio.sleep(0.4)  # past the first linger: it was cancelled
    assert bus.user_subscriptions == 1
    await _pushed(nc, user, b"two")
    await asyncio.sleep(0.1)
    assert again.frames == [b"two"]

    hub.remove_user_socket(again)
    bus.release_user(user)
    await asyncio.sleep(0.6)
    assert bus.user_subscriptions == 0
    await bus.stop()


async def test_zero_linger_unsubscribes_at_once(nc: Client) -> None:
    hub, bus, user, socket = await _subscribed(nc, linger=0)
    hub.remove_user_socket(socket)
    bus.release_user(user)
    assert bus.user_subscriptions == 0
