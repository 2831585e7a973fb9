"""Metrics everywhere (issue 13): every service replica serves Prometheus metrics on its own port
(requests per endpoint and outcome, latency, stream and bucket sizes, consumer lag, process
collectors); the gateway's /metrics adds delivery latency and send-queue depth."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from natter.launcher import free_port
from tests.conftest import Stack
from tests.support import connect, join, register, unique_name


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page: (name, sorted labels) -> value (the official parser)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(
    page: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    wanted = tuple(sorted(labels.items()))
    return page.get((name, wanted))


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.get(url)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return samples(answer.text)


async def test_every_tier_exposes_its_metrics(stack_factory: Any) -> None:
    ports = {name: free_port() for name in ("auth", "chat", "notify")}
    env = {f"NATTER_{name.upper()}_METRICS_PORT": str(port) for name, port in ports.items()}
    env.update({f"NATTER_{name.upper()}_METRICS_INTERVAL": "0.5" for name in ports})
    metrics_stack: Stack = stack_factory(env)
    room = unique_name("metrics")
    async with httpx.AsyncClient(base_url=metrics_stack.base_url) as http:
        alice = await register(http)
        ws = await connect(metrics_stack.ws_url, alice.access_token)
        await join(ws, room)
        for n in range(3):
            await ws.request({"type": "chat_message", "room": room, "message": f"m{n}"})
        refused = await ws.request({"type": "edit", "room": room, "target": 99, "message": "x"})
        assert refused["code"] == "message_not_found"
        await ws.close()

    chat = await scrape(f"http://127.0.0.1:{ports['chat']}/metrics")
    assert value(chat, "natter_service_requests_total", service="chat", endpoint="chat.send", code="ok") == 3
    assert (
        value(
            chat,
            "natter_service_requests_total",
            service="chat",
            endpoint="chat.edit",
            code="message_not_found",
        )
        == 1
    )
    assert value(chat, "natter_service_request_seconds_count", service="chat", endpoint="chat.send") == 3
    assert (value(chat, "process_resident_memory_bytes") or 0) > 0
    auth = await scrape(f"http://127.0.0.1:{ports['auth']}/metrics")
    assert (
        value(auth, "natter_service_requests_total", service="auth", endpoint="auth.register", code="ok") or 0
    ) >= 1

    # sizes and lag are read every METRICS_INTERVAL (15 s by default, 0.5 s here)
    async with asyncio.timeout(15):
        while True:
            chat = await scrape(f"http://127.0.0.1:{ports['chat']}/metrics")
            notify = await scrape(f"http://127.0.0.1:{ports['notify']}/metrics")
            shard_messages = [
                v
                for (name, labels), v in chat.items()
                if name == "natter_stream_messages" and labels[0][1].startswith("ROOMS_")
            ]
            lag = value(notify, "natter_consumer_pending", stream="EVENTS", consumer="notify-mentions")
            if (
                shard_messages
                and lag is not None
                and value(notify, "natter_stream_messages", stream="EVENTS") is not None
            ):
                break
            await asyncio.sleep(0.5)
    assert sum(shard_messages) >= 3 and lag == 0

    async with httpx.AsyncClient(timeout=5) as http:  # what a Kubernetes readiness probe asks
        for port in ports.values():
            health = await http.get(f"http://127.0.0.1:{port}/health")
            assert health.status_code == 200 and health.json() == {"status": "healthy"}
    async with httpx.AsyncClient(base_url=metrics_stack.base_url) as http:
        gateway = samples((await http.get("/metrics")).text)
    assert (value(gateway, "natter_gateway_delivery_seconds_count") or 0) >= 3
    assert value(gateway, "natter_gateway_send_queue_frames") == 0
    assert value(gateway, "natter_gateway_send_queue_frames_max") == 0
    assert (value(gateway, "process_cpu_seconds_total") or 0) > 0
    # every collection is timed (shared.gc_control); young ones happen within seconds of serving
    assert (value(gateway, "natter_gc_pause_seconds_count", generation="0") or 0) > 0
    assert (value(chat, "natter_gc_pause_seconds_count", generation="0") or 0) > 0
