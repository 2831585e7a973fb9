"""Rules of the shipped web client (gateway/static): user strings never become HTML, and the
protocol lives in the SDK only (app.js is UI on top of /sdk/natter.js, issue 13 item 5)."""

from __future__ import annotations

import re
from pathlib import Path

STATIC = Path(__file__).resolve().parents[2] / "gateway" / "static"


def code_of(name: str) -> str:
    """The file without comments (a rule may be named in a comment without being broken)."""
    text = (STATIC / name).read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"(?m)^\s*//.*$|\s//\s.*$", "", text)


def test_no_html_sinks_in_the_client_or_the_sdk() -> None:
    for name in ("app.js", "natter.js"):
        code = code_of(name)
        for sink in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            assert sink not in code, f"{name} uses {sink}"


def test_the_web_client_speaks_the_protocol_only_through_the_sdk() -> None:
    code = code_of("app.js")
    assert 'from "/sdk/natter.js"' in code
    for raw in ("new WebSocket", "fetch(", "JSON.parse(event.data", 'type: "chat_message"', 'type: "join"'):
        assert raw not in code, f"app.js does protocol work itself: {raw}"
    index = (STATIC / "index.html").read_text()
    assert '<script type="module" src="/static/app.js"></script>' in index
