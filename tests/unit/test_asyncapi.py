"""The AsyncAPI document of the event feed (shared.asyncapi) against the AsyncAPI 3.0.0 JSON
Schema of ``@asyncapi/specs`` 6.11.1 (vendored, tests/schemas/README.md), and events built by
shared.events against the payload schemas the document gives them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from shared import asyncapi
from shared.events import EVENT_TYPES, envelope, feed_subject

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "asyncapi-3.0.0.json").read_text())

SAMPLES: dict[str, dict[str, Any]] = {
    "message.created": {
        "room": "general",
        "seq": 7,
        "id": "general:7",
        "user_id": "u1",
        "username": "alice",
        "message": "hello",
        "timestamp": "2026-12-07T10:00:00.000Z",
        "client_msg_id": "c1",
    },
    "message.edited": {
        "room": "general",
        "seq": 8,
        "type": "message_edited",
        "user_id": "u1",
        "username": "alice",
        "timestamp": "2026-12-07T10:00:01.000Z",
        "target": 7,
        "message": "hello!",
        "edited_at": "2026-12-07T10:00:01.000Z",
    },
    "message.deleted": {
        "room": "general",
        "seq": 9,
        "type": "message_deleted",
        "user_id": "u1",
        "username": "alice",
        "timestamp": "2026-12-07T10:00:02.000Z",
        "target": 7,
    },
    "reaction.added": {
        "room": "general",
        "seq": 10,
        "type": "reaction",
        "user_id": "u2",
        "username": "bob",
        "timestamp": "2026-12-07T10:00:03.000Z",
        "target": 7,
        "emoji": "+1",
        "op": "add",
    },
    "reaction.removed": {
        "room": "general",
        "seq": 11,
        "type": "reaction",
        "user_id": "u2",
        "username": "bob",
        "timestamp": "2026-12-07T10:00:04.000Z",
        "target": 7,
        "emoji": "+1",
        "op": "remove",
    },
    "member.changed": {
        "room": "team",
        "seq": 3,
        "type": "member",
        "user_id": "u1",
        "username": "alice",
        "timestamp": "2026-12-07T10:00:05.000Z",
        "action": "banned",
        "member": {"user_id": "u2", "username": "bob"},
        "until": "2026-12-07T11:00:05.000Z",
    },
    "user.registered": {"user_id": "u3", "username": "carol"},
    "notification.created": {
        "user_id": "u3",
        "id": "welcome-u3",
        "title": "Welcome to natter",
        "message": "hi",
        "notification_type": "info",
        "timestamp": "2026-12-07T10:00:06.000Z",
        "read": False,
        "metadata": {},
    },
}


def test_the_document_is_valid_asyncapi_3() -> None:
    document = asyncapi.document()
    errors = list(jsonschema.Draft7Validator(SCHEMA).iter_errors(document))
    assert errors == [], [e.message for e in errors[:5]]
    assert document["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {feed_subject(t) for t in EVENT_TYPES}


def test_the_validator_catches_a_broken_document() -> None:
    """The check can fail: a channel without its required shape is refused."""
    broken = copy.deepcopy(asyncapi.document())
    broken["operations"]["receiveMessageCreated"]["action"] = "listen"
    assert list(jsonschema.Draft7Validator(SCHEMA).iter_errors(broken))


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_built_event_matches_its_payload_schema(event_type: str) -> None:
    document = asyncapi.document()
    body = json.loads(envelope(event_type, f"id-{event_type}", SAMPLES[event_type]))
    assert body["type"] == event_type and body["data"]["user_id"]
    name = next(n for n, m in document["components"]["messages"].items() if m["title"] == event_type)
    # the payload schema, its references resolved inside the document's own components
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(body)) == []
    wrong = {**body, "type": "something.else"}
    assert list(validator.iter_errors(wrong))


def test_an_event_that_does_not_fit_its_model_is_refused() -> None:
    with pytest.raises(ValueError):
        envelope("reaction.added", "x", {**SAMPLES["reaction.added"], "op": "twist"})
    with pytest.raises(ValueError):
        envelope("no.such", "x", {})
