"""The AsyncAPI 3.0 document of natter's event feed, generated from :mod:`shared.events`.

One channel per event type (address ``events.<type>`` on the JetStream stream ``EVENTS``), one
``receive`` operation each, and each message's payload is the JSON schema pydantic derives from
the very model the producers validate every event with. The gateway serves the document at
``GET /asyncapi.json``; ``tests/unit/test_asyncapi.py`` validates it against the AsyncAPI 3.0.0
JSON Schema (vendored from ``@asyncapi/specs``) and checks that real events match their payload
schemas. Spec: https://www.asyncapi.com/docs/reference/specification/v3.0.0
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from shared import __version__
from shared.events import EVENT_TYPES, MODELS, feed_subject

#: AsyncAPI version of the generated document.
ASYNCAPI_VERSION = "3.0.0"
_REF = "#/components/schemas/{model}"


def _camel(event_type: str) -> str:
    """``message.created`` -> ``messageCreated`` (channel and operation keys)."""
    head, _, tail = event_type.partition(".")
    return head + tail[:1].upper() + tail[1:]


def _summary(model: type[Any]) -> str:
    """The first line of the docstring of the model's ``data`` type."""
    data = model.model_fields["data"].annotation
    return ((getattr(data, "__doc__", None) or "").strip().split("\n") or [""])[0]


def document(*, nats_host: str = "localhost:4222") -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document (a JSON-ready dict); ``nats_host`` goes into ``servers``."""
    _, top = models_json_schema([(MODELS[t], "serialization") for t in EVENT_TYPES], ref_template=_REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event_type in EVENT_TYPES:
        model = MODELS[event_type]
        name = model.__name__
        key = _camel(event_type)
        messages[name] = {
            "name": name,
            "title": event_type,
            "summary": _summary(model),
            "contentType": "application/json",
            "payload": {"$ref": _REF.format(model=name)},
            "headers": {
                "type": "object",
                "properties": {
                    "Nats-Msg-Id": {"type": "string", "description": "The event's `id` (de-duplication)."}
                },
            },
        }
        channels[key] = {
            "address": feed_subject(event_type),
            "title": event_type,
            "description": f"Every `{event_type}` event, on the JetStream stream `EVENTS` (kept 7 days).",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"receive{key[:1].upper()}{key[1:]}"] = {
            "action": "receive",
            "title": f"Consume {event_type}",
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{name}"}],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "natter event feed",
            "version": __version__,
            "description": (
                "Every room event (messages, edits, deletes, reactions, membership changes), new "
                "users and notifications, published on the JetStream stream `EVENTS` under "
                "`events.<type>` as `{id, type, created_at, data}`. Room events arrive in `seq` "
                "order per room. Delivery is at least once: de-duplicate by `id`. The same "
                "objects are the bodies of natter's webhooks (docs/integrations.md)."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": nats_host,
                "protocol": "nats",
                "description": "natter's NATS (JetStream); log in as the `backend` user.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }
