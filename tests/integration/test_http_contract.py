"""The HTTP API never answers 5xx to bad input and its OpenAPI document is true (issue 10,
item 8): schemathesis with every check (``--checks all``: no server error, documented status
codes, content types, headers and response schemas, schema-valid requests accepted and invalid
ones refused, authentication enforced) against a real gateway, bounded in examples.

Its own stack: the fuzzer fails many logins and registers many users from 127.0.0.1, which must
not slow other tests' logins on the shared stack.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import register, service_token

#: Per-operation expectations (an upload may be 415: its type is judged from its bytes).
CONFIG = Path(__file__).with_name("schemathesis.toml")
#: Examples per operation and phase: bounded so the whole run takes well under a minute.
MAX_EXAMPLES = "25"


def schemathesis() -> str:
    found = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    if found is None:
        pytest.fail("schemathesis is not installed (pip install 'natter[test]')")
    return found


def run_schemathesis(base_url: str, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [
        schemathesis(),
        "--config-file",
        str(CONFIG),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        "20261204",
        "--header",
        f"Authorization: Bearer {token}",
        "--request-timeout",
        "15",
        "--no-color",
        *extra,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def test_schemathesis_finds_nothing(stack_factory: Any) -> None:
    own = stack_factory()

    async def tokens() -> tuple[str, str]:
        async with httpx.AsyncClient(base_url=own.base_url) as http:
            user = await register(http)
        return user.access_token, await service_token(own.nats.url, "schemathesis")

    user_token, svc_token = asyncio.run(tokens())
    as_user = run_schemathesis(own.base_url, user_token)
    assert as_user.returncode == 0, as_user.stdout[-6000:] + as_user.stderr[-2000:]
    assert "Server error" not in as_user.stdout
    # The service-only routes again with a service token, so they are exercised past the 403.
    as_service = run_schemathesis(own.base_url, svc_token, "--include-path-regex", "^/api/notifications/")
    assert as_service.returncode == 0, as_service.stdout[-6000:] + as_service.stderr[-2000:]
