"""natter.bench.plot draws every scenario's panels into a PNG (matplotlib: the ``bench`` extra,
which ``make test`` installs; without it the test skips on a laptop and fails under CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.mark.parametrize("scenario", ["fanout", "saturation", "idle", "connect"])
def test_plot_draws_every_scenario(tmp_path: Path, scenario: str) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("matplotlib is missing: install the bench extra (pip install -e '.[bench]')")
        pytest.skip("matplotlib is missing: pip install -e '.[bench]'")
    from natter.bench.plot import plot_documents

    summary = {
        "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0},
        "server_cpu_ms_per_1k_deliveries": 10.0,
        "per_connection_kib": 40.0,
        "all_processes_per_connection_kib": 50.0,
        "connect_seconds": 1.0,
        "connects_per_s": 100.0,
    }
    step = {"rate": 10.0, "latency_ms": {"p99": 5.0}, "deliveries_per_s": 100.0}
    params = {
        "members": 10,
        "rate": 10.0,
        "step_factor": 1.5,
        "connections": 10,
        "churn_concurrency": 4,
        "p99_limit_ms": 100,
    }
    results = {
        name: {"scenario": scenario, "target": name, "params": params, "summary": summary, "steps": [step]}
        for name in ("natter", "fastapi")
    }
    out = tmp_path / "p.png"
    plot_documents([{"results": results}], out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
