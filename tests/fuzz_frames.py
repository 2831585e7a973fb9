"""Hypothesis strategies for client frames, and the rules a gateway must keep under them.

Shared by the CI fuzz test (tests/integration/test_gateway_fuzz.py, a bounded run) and the
on-demand script (benchmarks/fuzz_gateway.py, 10,000 frames and more against a running stack).

The frames are what a hostile or broken client sends: every client frame type with fields of
the right and the wrong type, unknown types, JSON that is not an object, deeply nested values,
strings with lone surrogate escapes, numbers far outside any range, garbage text. None is over
the 64 KiB frame limit (that one closes 1009 by design, tested elsewhere).
"""

from __future__ import annotations

import json
from typing import Any, Final

from hypothesis import strategies as st

from shared.protocol import CLIENT_FRAME_TYPES

#: Largest fuzz frame (bytes): under the 64 KiB limit with room for escapes.
MAX_FRAME: Final = 60_000
#: Error codes a gateway may answer; ``internal`` is never allowed for client input.
ALLOWED_ERRORS: Final = frozenset(
    {
        "invalid_json",
        "unknown_type",
        "validation_error",
        "unsupported_frame",
        "forbidden",
        "invalid_room",
        "not_joined",
        "room_not_found",
        "rate_limited",
        "auth_failed",
        "token_expired",
    }
)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def rooms(known: list[str]) -> st.SearchStrategy[Any]:
    """Room fields: rooms that exist (so frames reach chat), valid new names, invalid ones."""
    return st.one_of(
        st.sampled_from(known),
        st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,20}\Z"),
        st.sampled_from(["a.b", "*", ">", "has space", "UPPER", "", "x" * 65, "dm-nobody", "general"]),
        json_values,
    )


def frames(known_rooms: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Frame objects: a ``type`` (known or not) and any mix of protocol fields."""
    field_values: dict[str, st.SearchStrategy[Any]] = {
        "room": rooms(known_rooms),
        "message": st.one_of(st.text(min_size=1, max_size=300), st.text(max_size=4100), json_values),
        "client_msg_id": st.one_of(st.text(max_size=70), json_values),
        "since": st.one_of(st.integers(min_value=-5, max_value=10**6), json_values),
        "before": st.one_of(st.integers(min_value=-5, max_value=10**6), json_values),
        "after": st.one_of(st.integers(min_value=-5, max_value=10**6), json_values),
        "limit": st.one_of(st.integers(min_value=-5, max_value=2000), json_values),
        "id": st.one_of(
            st.text(max_size=70), st.integers(min_value=-(10**20), max_value=10**20), json_values
        ),
        "token": st.one_of(st.text(max_size=200), json_values),
        "ids": st.one_of(st.lists(st.text(max_size=40), max_size=5), json_values),
        "all": json_values,
        "unread_only": json_values,
    }
    return st.fixed_dictionaries(
        {"type": st.one_of(st.sampled_from(sorted(CLIENT_FRAME_TYPES)), st.text(max_size=12), json_values)},
        optional=field_values,
    )


def _with_lone_surrogate(text: str) -> str:
    """Turn the first escaped or plain character of a JSON text's first string into ``\\ud800``."""
    index = text.find('"')
    return text if index < 0 else text[: index + 1] + "\\ud800" + text[index + 1 :]


def raw_frames(known_rooms: list[str]) -> st.SearchStrategy[str]:
    """Text frames: encoded frame objects (some with a lone surrogate spliced in), other JSON,
    deep nesting, and text that is not JSON at all. Every one is under :data:`MAX_FRAME`."""
    encoded = frames(known_rooms).map(lambda frame: json.dumps(frame))
    deep = st.integers(min_value=1, max_value=20_000).map(
        lambda depth: '{"type":"ping","x":' + "[" * depth + "]" * depth + "}"
    )
    return st.one_of(
        encoded,
        encoded.map(_with_lone_surrogate),
        json_values.map(json.dumps),
        deep,
        st.text(max_size=200),
    ).filter(lambda text: len(text.encode("utf-8", "surrogatepass")) <= MAX_FRAME)


def check_answer(frame: dict[str, Any]) -> str | None:
    """Why ``frame`` (something the gateway sent) breaks the rules, or ``None``."""
    if frame.get("type") != "error":
        return None
    code = frame.get("code")
    if code not in ALLOWED_ERRORS:
        return f"error code {code!r}: {frame}"
    if code == "validation_error" and not frame.get("details"):
        return f"validation_error without details: {frame}"
    return None
