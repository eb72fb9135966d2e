"""Dual-stack addressing flags: --cluster-cidr/--service-cidr lists, --dual-stack,
--node-cidr-mask-v6, and `podnet up`'s pass-through of them."""

import argparse

import pytest

from podnet import settings
from podnet.settings import ControlPlaneSettings, SettingsError
from podnet.up import UpError, add_network_arguments, network_args


def load(env: dict[str, str], *argv: str) -> ControlPlaneSettings:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, ControlPlaneSettings)
    return settings.load(ControlPlaneSettings, parser.parse_args(list(argv)),
                         {"PODNET_ADVERTISE": "0", **env})


def test_ipv4_only_stays_the_default() -> None:
    s = load({})
    assert (s.cluster_cidr, s.service_cidr) == ("10.244.0.0/16", "10.96.0.0/12")
    assert (s.cluster_cidrs, s.service_cidrs) == (["10.244.0.0/16"], ["10.96.0.0/12"])
    assert not s.is_dual_stack
    assert s.node_cidr_mask_v6 == 64


def test_dual_stack_adds_the_default_ipv6_cidrs() -> None:
    s = load({}, "--dual-stack")
    assert s.cluster_cidrs == ["10.244.0.0/16", "fd00:10:244::/56"]
    assert s.service_cidrs == ["10.96.0.0/12", "fd00:10:96::/112"]
    assert (s.cluster_cidr, s.service_cidr) == ("10.244.0.0/16", "10.96.0.0/12")  # primary
    assert s.is_dual_stack
    assert load({"PODNET_DUAL_STACK": "1"}).cluster_cidrs == s.cluster_cidrs


def test_two_cidrs_primary_first() -> None:
    s = load({}, "--cluster-cidr", "fd00:1::/56, 10.1.0.0/16",
             "--service-cidr", "fd00:2::/112,10.2.0.0/16")
    assert s.cluster_cidrs == ["fd00:1::/56", "10.1.0.0/16"]
    assert (s.cluster_cidr, s.service_cidr) == ("fd00:1::/56", "fd00:2::/112")
    # --dual-stack adds nothing when an IPv6 CIDR is already there
    assert load({}, "--dual-stack", "--cluster-cidr", "fd00:1::/56,10.1.0.0/16",
                "--service-cidr", "fd00:2::/112,10.2.0.0/16").cluster_cidrs == s.cluster_cidrs


def test_single_stack_ipv6() -> None:
    s = load({"PODNET_CLUSTER_CIDR": "fd00:10:244::/56",
              "PODNET_SERVICE_CIDR": "fd00:10:96::/112"})
    assert (s.cluster_cidrs, s.service_cidrs) == (["fd00:10:244::/56"], ["fd00:10:96::/112"])
    assert not s.is_dual_stack
    # --dual-stack does not add IPv4 to an IPv6 cluster: it only adds the IPv6 defaults
    assert load({}, "--dual-stack", "--cluster-cidr", "fd00:10:244::/56", "--service-cidr",
                "fd00:10:96::/112").cluster_cidrs == ["fd00:10:244::/56"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--cluster-cidr", "10.1.0.0/16,10.2.0.0/16"],
     "--cluster-cidr: two CIDRs must be of different families (one IPv4, one IPv6), got "
     "10.1.0.0/16 and 10.2.0.0/16"),
    (["--cluster-cidr", "fd00:1::/56,fd00:2::/56"], "--cluster-cidr: two CIDRs must be of "
                                                   "different families"),
    (["--cluster-cidr", "10.1.0.0/16,fd00::/56,fd01::/56"], "--cluster-cidr: at most two"),
    (["--cluster-cidr", "10.244.0.0/16,fd00:10:244::1/56"], "--cluster-cidr: "
                                                            "fd00:10:244::1/56 has host bits"),
    (["--cluster-cidr", "banana"], "--cluster-cidr: 'banana' does not appear to be"),
    (["--cluster-cidr", ","], "--cluster-cidr: a CIDR is required"),
    (["--service-cidr", "10.96.0.0/12,fd00:10:96::/96", "--cluster-cidr",
      "10.244.0.0/16,fd00::/56"], "--service-cidr: an IPv6 service CIDR must be /108 or "
                                  "longer, got fd00:10:96::/96"),
    (["--dual-stack", "--node-cidr-mask-v6", "56"],
     "--node-cidr-mask-v6: must be between 57 and 72, got 56"),
    (["--dual-stack", "--node-cidr-mask-v6", "80"],
     "--node-cidr-mask-v6: must be between 57 and 72, got 80"),
    (["--dual-stack", "--node-cidr-mask", "8"], "--node-cidr-mask: must be between 17 and 30"),
    (["--cluster-cidr", "10.244.0.0/16,fd00::/56"],
     "--service-cidr: its families (IPv4) must match --cluster-cidr's (IPv4,IPv6)"),
    (["--cluster-cidr", "fd00::/56,10.244.0.0/16", "--service-cidr",
      "10.96.0.0/12,fd00:10:96::/112"],
     "--service-cidr: its families (IPv4,IPv6) must match --cluster-cidr's (IPv6,IPv4), "
     "in the same order"),
    (["--node-cidr-mask-v6", "x"], "--node-cidr-mask-v6: expected int, got 'x'"),
])
def test_bad_cidr_flags_fail_with_one_clear_line(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        load({}, *argv)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_ipv6_mask_is_not_checked_on_an_ipv4_cluster() -> None:
    assert load({}, "--node-cidr-mask-v6", "200").node_cidr_mask_v6 == 200


def up_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_network_arguments(parser)
    return parser.parse_args(list(argv))


def test_podnet_up_passes_the_flags_on(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("PODNET_DUAL_STACK", "PODNET_CLUSTER_CIDR", "PODNET_SERVICE_CIDR"):
        monkeypatch.delenv(k, raising=False)
    assert network_args(up_args()) == []
    assert network_args(up_args("--dual-stack")) == ["--dual-stack"]
    assert network_args(up_args("--cluster-cidr", "fd00:10:244::/56", "--service-cidr",
                                "fd00:10:96::/112", "--node-cidr-mask-v6", "60")) == [
        "--cluster-cidr", "fd00:10:244::/56", "--service-cidr", "fd00:10:96::/112",
        "--node-cidr-mask-v6", "60"]


def test_podnet_up_checks_the_flags_before_starting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PODNET_CLUSTER_CIDR", raising=False)
    with pytest.raises(UpError, match=r"^--cluster-cidr: two CIDRs must be of different"):
        network_args(up_args("--cluster-cidr", "10.1.0.0/16,10.2.0.0/16"))
    monkeypatch.setenv("PODNET_CLUSTER_CIDR", "10.1.0.0/16,fd00::/56")  # env counts too
    with pytest.raises(UpError, match=r"^--service-cidr: its families"):
        network_args(up_args())
