"""shared.kv_keys against a real nats-server: every key stored before the call is listed, at
once, however many and whatever the machine's load (nats-py's ``kv.keys()`` can end before its
watcher has seen any, shared/kv_keys.py)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError

from shared.kv_keys import kv_keys


async def test_every_stored_key_is_listed_even_while_the_client_is_busy(nc: Client) -> None:
    js = nc.jetstream()
    bucket = f"kvkeys_{uuid.uuid4().hex[:8]}"
    kv = await js.create_key_value(bucket=bucket)
    try:
        assert await kv_keys(js, bucket) == []
        await kv.put("a.1", b"x")
        await kv.put("a.2", b"y")
        await kv.put("b.1", b"z")

        async def busy() -> None:  # keeps the client's event loop full: it waits for nothing
            while True:  # noqa: ASYNC110
                await asyncio.sleep(0)

        spinner = asyncio.create_task(busy())
        try:
            listings = await asyncio.gather(*(kv_keys(js, bucket) for _ in range(50)))
        finally:
            spinner.cancel()
        assert all(keys == ["a.1", "a.2", "b.1"] for keys in listings), listings
        assert await kv_keys(js, bucket, "a.>") == ["a.1", "a.2"]
        # a deleted key keeps its marker, so it is listed; reading it says it is gone
        await kv.delete("a.2")
        assert await kv_keys(js, bucket) == ["a.1", "a.2", "b.1"]
        with pytest.raises(KeyNotFoundError):
            await kv.get("a.2")
    finally:
        await js.delete_key_value(bucket)
