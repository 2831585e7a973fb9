"""deploy/k8s: every manifest valid for a current Kubernetes (kubernetes-validate, strict), the
NATS Helm values current with shared/nats_auth.py, and the manifests consistent with natter:
probes on the ports natter serves /health on, each tier logged in as its own NATS user, the
gateway the only pod reachable from outside."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from natter.k8s import render
from shared.nats_auth import TIERS, password_env

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
#: The Kubernetes version the manifests are validated against (kubernetes-validate's newest).
KUBERNETES = "1.37.0"


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "nats-values.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_every_manifest_is_valid_for_kubernetes() -> None:
    files = sorted(str(p) for p in K8S.glob("*.yaml") if p.name != "nats-values.yaml")
    assert len(files) >= 9
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", KUBERNETES, *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_catches_a_broken_manifest(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (K8S / "gateway.yaml").read_text().replace("containerPort: 8000", "containerPort: eight")
    )
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", KUBERNETES, str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0


def test_nats_values_are_current() -> None:
    assert (K8S / "nats-values.yaml").read_text() == render(), (
        "run: natter k8s-nats-values > deploy/k8s/nats-values.yaml"
    )
    values = yaml.safe_load(render())
    users = {u["user"]: u for u in values["config"]["merge"]["authorization"]["users"]}
    assert set(users) == set(TIERS)
    assert values["config"]["jetstream"]["merge"] == {"sync_interval": "always"}
    assert values["config"]["cluster"]["replicas"] == 3
    for tier in TIERS:
        assert users[tier]["password"] == f"<< ${password_env(tier)} >>"
        assert values["container"]["env"][password_env(tier)]["valueFrom"]["secretKeyRef"][
            "key"
        ] == password_env(tier)


def test_deployments_match_how_natter_runs() -> None:
    deployments = {d["metadata"]["name"]: d for d in documents() if d["kind"] == "Deployment"}
    assert set(deployments) == {"natter-gateway", "natter-auth", "natter-chat", "natter-notify"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        tier = name.removeprefix("natter-")
        env = {e["name"]: e for e in container["env"]}
        assert env["NATTER_NATS_USER"]["value"] == tier
        assert env["NATTER_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == password_env(tier)
        probe = container["readinessProbe"]["httpGet"]
        assert probe["path"] == "/health"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if tier == "gateway":
            assert ports[probe["port"]] == 8000 and container["args"][-1] == "8000"
            assert "preStop" in container["lifecycle"]
            # preStop + uvicorn's 10 s of closing sockets 1012 fit in the grace period
            assert pod["terminationGracePeriodSeconds"] >= 10 + 10 + 5
        else:
            assert ports[probe["port"]] == int(env[f"NATTER_{tier.upper()}_METRICS_PORT"]["value"])
        assert pod["securityContext"]["runAsUser"] == 10001  # the image's user (Dockerfile)


def test_only_the_gateway_is_reachable_from_outside() -> None:
    policies = {d["metadata"]["name"]: d for d in documents() if d["kind"] == "NetworkPolicy"}
    deny = policies["natter-default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    open_to_all = [
        p for p in policies.values() for rule in p["spec"].get("ingress", []) if "from" not in rule
    ]
    assert [p["metadata"]["name"] for p in open_to_all] == ["natter-gateway-from-anywhere"]
    assert open_to_all[0]["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "natter-gateway"
    }
    kinds = {d["kind"] for d in documents()}
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret", "Job", "Ingress"} <= kinds
