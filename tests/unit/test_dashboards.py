"""deploy/grafana/natter.json and deploy/prometheus/prometheus.yml against the metrics natter
really exposes: every series a panel queries exists in a gateway's or a service's registry, and
Prometheus scrapes every tier on the ports natter serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from gateway.metrics import Metrics
from shared.service_metrics import ServiceMetrics

ROOT = Path(__file__).resolve().parents[2]


def exposed() -> set[str]:
    """Every sample name the gateway and a service replica expose (counters with ``_total``,
    histograms with ``_bucket`` ...)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    names: set[str] = set()
    for registry in (Metrics().registry, ServiceMetrics("chat").registry):
        for family in registry.collect():  # labelled families have no samples until used
            names.update(sample.name for sample in family.samples)
            names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def queried(expr: str) -> set[str]:
    """The series names a PromQL expression reads (natter's and the process collectors')."""
    without_strings = re.sub(r'"[^"]*"', "", expr)
    return set(re.findall(r"\b(?:natter|process)_[a-zA-Z0-9_]+", without_strings))


def test_every_dashboard_series_exists() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/natter.json").read_text())
    names = exposed()
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    used = set().union(*(queried(e) for e in exprs))
    assert used and used <= names, sorted(used - names)
    assert "natter_gateway_delivery_seconds_bucket" in used and "natter_consumer_pending" in used


def test_prometheus_scrapes_every_tier_where_it_serves() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for job, service, variable in (
        ("auth", "auth_service", "NATTER_AUTH_METRICS_PORT"),
        ("chat", "chat_service", "NATTER_CHAT_METRICS_PORT"),
        ("notify", "notify_service", "NATTER_NOTIFY_METRICS_PORT"),
    ):
        sd = jobs[job]["dns_sd_configs"][0]
        assert sd["names"] == [service]
        assert str(sd["port"]) == compose[service]["environment"][variable]
    assert jobs["gateway"]["dns_sd_configs"][0]["port"] == 8000
