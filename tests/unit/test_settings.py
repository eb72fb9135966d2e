from pathlib import Path

import pytest

from podnet import settings
from podnet.settings import AgentSettings, ControlPlaneSettings, SettingsError


def test_defaults_env_then_flags() -> None:
    parser = __import__("argparse").ArgumentParser()
    settings.add_arguments(parser, ControlPlaneSettings)
    env = {"PODNET_LISTEN_PORT": "7000", "PODNET_NODE_MONITOR_GRACE_S": "3.5"}
    s = settings.load(ControlPlaneSettings, parser.parse_args([]), env)
    assert (s.listen_port, s.node_monitor_grace_s) == (7000, 3.5)
    s = settings.load(ControlPlaneSettings, parser.parse_args(["--listen-port", "7001"]), env)
    assert s.listen_port == 7001
    assert s.secret_path == Path(".podnet/secret")


@pytest.mark.parametrize(("env", "message"), [
    ({"PODNET_LISTEN_PORT": "seven"}, "--listen-port: expected int, got 'seven'"),
    ({"PODNET_LISTEN_PORT": "70000"}, "--listen-port: port must be 0..65535"),
    ({"PODNET_CLUSTER_CIDR": "10.244.0.1/16"}, "--cluster-cidr:"),
    ({"PODNET_NODE_CIDR_MASK": "8"}, "--node-cidr-mask: must be between 17 and 30"),
    ({"PODNET_NODE_MONITOR_GRACE_S": "0"}, "--node-monitor-grace-s: must be greater than 0"),
])
def test_bad_settings_fail_with_one_clear_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings.load(ControlPlaneSettings, None, env)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("env", "message"), [
    ({}, "--name: a node name is required"),
    ({"PODNET_NAME": "Node_1"}, "--name: 'Node_1' must consist of lower case"),
    # No --controlplane means discovery, which needs one address to look on.
    ({"PODNET_NAME": "n1", "PODNET_LISTEN_HOST": "0.0.0.0"}, "--mdns-interface: cannot tell"),
    ({"PODNET_NAME": "n1", "PODNET_MDNS_INTERFACE": "0.0.0.0"}, "must be one interface's"),
    ({"PODNET_NAME": "n1", "PODNET_DISCOVERY_TIMEOUT_S": "0"}, "--discovery-timeout-s"),
    ({"PODNET_NAME": "n1", "PODNET_CONTROLPLANE": "127.0.0.1:1"}, "expected an https:// URL"),
])
def test_agent_settings_validation(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings.load(AgentSettings, None, env)
    assert message in str(err.value)


def test_agent_without_controlplane_discovers_on_its_own_address() -> None:
    s = settings.load(AgentSettings, None, {"PODNET_NAME": "n1"})
    assert s.controlplane == "" and s.discovery_interface == "127.0.0.1"
    s = settings.load(AgentSettings, None, {"PODNET_NAME": "n1",
                                             "PODNET_LISTEN_HOST": "198.18.0.12"})
    assert s.discovery_interface == "198.18.0.12"


@pytest.mark.parametrize(("env", "message"), [
    ({"PODNET_LISTEN_HOST": "0.0.0.0"}, "--mdns-interface: listening on '0.0.0.0'"),
    ({"PODNET_MDNS_INTERFACE": "eth0"}, "--mdns-interface: expected one IPv4 address"),
    ({"PODNET_CLUSTER_NAME": "Bad_Name"}, "--cluster-name:"),
])
def test_controlplane_mdns_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings.load(ControlPlaneSettings, None, env)
    assert message in str(err.value)


def test_wildcard_control_plane_may_opt_out_of_mdns() -> None:
    s = settings.load(ControlPlaneSettings, None, {"PODNET_LISTEN_HOST": "0.0.0.0",
                                                    "PODNET_ADVERTISE": "false"})
    assert not s.advertise
