"""Pure logic of ``natter up`` (natter/up.py, natter/launcher.py): ports, option validation, backoff,
the process plan."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from natter.launcher import backoff_delay, describe_exit
from natter.up import (
    CLUSTER_NODES,
    UpError,
    UpOptions,
    UsageError,
    build_plan,
    check_ports_free,
    gateway_ports,
    http_url,
    nats_client_ports,
    nats_host_port,
    nats_servers,
    pick_cluster_ports,
    read_pid_file,
    validate_options,
)


def test_gateways_use_consecutive_ports_from_port() -> None:
    assert gateway_ports(8000, 1) == [8000]
    assert gateway_ports(8000, 3) == [8000, 8001, 8002]


def test_nats_nodes_use_consecutive_client_ports() -> None:
    assert nats_client_ports(4222, 1) == [4222]
    assert nats_client_ports(4222, 3) == [4222, 4223, 4224]
    assert nats_client_ports(4222, 0) == []


def test_nats_nodes_follow_cluster_option_and_external_url() -> None:
    assert UpOptions().nats_nodes == 1
    assert UpOptions(nats_cluster=3).nats_nodes == CLUSTER_NODES == 3
    assert UpOptions(nats_url="nats://10.0.0.1:4222").nats_nodes == 0


def test_defaults_are_valid() -> None:
    validate_options(UpOptions())
    validate_options(UpOptions(gateways=4, chat=2, auth=2, notify=3, nats_cluster=3))


@pytest.mark.parametrize(
    ("options", "option"),
    [
        (UpOptions(gateways=0), "--gateways"),
        (UpOptions(chat=0), "--chat"),
        (UpOptions(auth=0), "--auth"),
        (UpOptions(notify=0), "--notify"),
        (UpOptions(nats_cluster=2), "--nats-cluster"),
        (UpOptions(nats_cluster=0), "--nats-cluster"),
        (UpOptions(nats_cluster=3, nats_url="nats://127.0.0.1:4222"), "--nats-cluster"),
        (UpOptions(port=65535, gateways=2), "--port"),
        (UpOptions(port=0), "--port"),
        (UpOptions(nats_port=65534, nats_cluster=3), "--nats-port"),
        (UpOptions(port=4221, gateways=2, nats_port=4222), "--port"),
        (UpOptions(port=8000, nats_port=7999, nats_cluster=3), "--port"),
    ],
)
def test_invalid_options_name_the_option_to_change(options: UpOptions, option: str) -> None:
    with pytest.raises(UsageError) as caught:
        validate_options(options)
    assert caught.value.option == option
    assert option in str(caught.value)


def test_gateway_ports_may_touch_nats_ports_when_nats_is_external() -> None:
    validate_options(UpOptions(port=4222, nats_url="nats://127.0.0.1:4222"))


def test_busy_nats_port_tells_how_to_pick_another() -> None:
    busy = {("127.0.0.1", 4222)}
    with pytest.raises(UpError) as caught:
        check_ports_free(UpOptions(), is_free=lambda host, port: (host, port) not in busy)
    message = str(caught.value)
    assert "4222" in message
    assert "--nats-port" in message
    assert "NATS_URL" in message


def test_busy_second_cluster_node_port_is_reported() -> None:
    with pytest.raises(UpError) as caught:
        check_ports_free(UpOptions(nats_cluster=3), is_free=lambda host, port: port != 4224)
    assert "4224" in str(caught.value)


def test_busy_gateway_port_tells_how_to_pick_another() -> None:
    with pytest.raises(UpError) as caught:
        check_ports_free(UpOptions(gateways=3), is_free=lambda host, port: port != 8002)
    message = str(caught.value)
    assert "8002" in message
    assert "--port" in message


def test_external_nats_skips_the_nats_port_check() -> None:
    check_ports_free(UpOptions(nats_url="nats://127.0.0.1:4222"), is_free=lambda host, port: port != 4222)


def test_all_free_passes() -> None:
    check_ports_free(UpOptions(gateways=2, nats_cluster=3), is_free=lambda host, port: True)


def test_cluster_ports_prefer_6222_and_fall_back_to_free_ones() -> None:
    assert pick_cluster_ports(3, taken=set(), is_free=lambda host, port: True) == [6222, 6223, 6224]
    ports = pick_cluster_ports(3, taken={6223}, is_free=lambda host, port: port != 6222)
    assert ports[2] == 6224
    assert ports[0] not in (6222, 6223, 6224) and ports[1] not in (6222, 6223, 6224)
    assert len(set(ports)) == 3


def test_backoff_doubles_from_half_a_second_up_to_ten() -> None:
    assert [backoff_delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_delay(0) == 0.5


def test_describe_exit() -> None:
    assert describe_exit(None) == "still running"
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"


def test_urls() -> None:
    assert http_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert http_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert http_url("::", 8000) == "http://[::1]:8000"
    assert nats_servers(" nats://a:1 ,nats://b:2,") == ["nats://a:1", "nats://b:2"]
    assert nats_host_port("nats://10.1.2.3:4333") == ("10.1.2.3", 4333)
    assert nats_host_port("nats://example") == ("example", 4222)
    assert nats_host_port("localhost:5222") == ("localhost", 5222)


def _argv_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_plan_single_node(tmp_path: Path) -> None:
    plan = build_plan(UpOptions(port=9100, nats_port=9222, gateways=2, chat=2), data_dir=tmp_path)
    assert plan.nats_url == "nats://127.0.0.1:9222"
    assert [c.label for c in plan.nats] == ["nats"]
    assert [c.label for c in plan.services] == ["auth-0", "chat-0", "chat-1", "notify-0"]
    assert [c.label for c in plan.gateways] == ["gateway-0", "gateway-1"]
    assert [c.url for c in plan.gateways] == ["http://127.0.0.1:9100", "http://127.0.0.1:9101"]
    nats_argv = plan.nats[0].process.argv
    assert _argv_value(nats_argv, "--port") == "9222"
    assert _argv_value(nats_argv, "--store_dir") == str(tmp_path / "nats")
    assert "sync_interval: always" in Path(_argv_value(nats_argv, "--config")).read_text()
    assert _argv_value(plan.gateways[1].process.argv, "--port") == "9101"
    for child in plan.children:
        assert child.process.log_path == tmp_path / "logs" / f"{child.label}.log"
        assert child.process.die_with_parent
    for child in [*plan.services, *plan.gateways]:
        assert child.process.env["NATS_URL"] == "nats://127.0.0.1:9222"


def test_plan_cluster_routes_and_replicas(tmp_path: Path) -> None:
    plan = build_plan(
        UpOptions(nats_port=9222, nats_cluster=3), data_dir=tmp_path, cluster_ports=[7001, 7002, 7003]
    )
    assert plan.nats_url == "nats://127.0.0.1:9222,nats://127.0.0.1:9223,nats://127.0.0.1:9224"
    assert [c.label for c in plan.nats] == ["nats-0", "nats-1", "nats-2"]
    stores = set()
    for index, child in enumerate(plan.nats):
        argv = child.process.argv
        assert _argv_value(argv, "--port") == str(9222 + index)
        assert _argv_value(argv, "--cluster") == f"nats://127.0.0.1:{7001 + index}"
        routes = set(_argv_value(argv, "--routes").split(","))
        assert routes == {f"nats://127.0.0.1:{p}" for p in (7001, 7002, 7003) if p != 7001 + index}
        stores.add(_argv_value(argv, "--store_dir"))
        assert _argv_value(argv, "--server_name") == f"natter-nats-{index}"
    assert len(stores) == 3
    for child in plan.services:
        assert child.process.env["NATTER_STREAM_REPLICAS"] == "3"
        assert child.process.env["NATS_URL"] == plan.nats_url


def test_plan_with_external_nats_starts_no_server(tmp_path: Path) -> None:
    plan = build_plan(UpOptions(nats_url="nats://10.9.9.9:4222"), data_dir=tmp_path)
    assert plan.nats == []
    assert plan.nats_url == "nats://10.9.9.9:4222"
    assert all(c.process.env["NATS_URL"] == "nats://10.9.9.9:4222" for c in plan.services)


def test_read_pid_file(tmp_path: Path) -> None:
    path = tmp_path / "pids.json"
    assert read_pid_file(path) is None
    path.write_text("not json")
    assert read_pid_file(path) is None
    path.write_text('{"natter_up": 12, "processes": {"nats": 13}}')
    assert read_pid_file(path) == {"natter_up": 12, "processes": {"nats": 13}}
