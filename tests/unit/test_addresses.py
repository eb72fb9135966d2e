"""How podnet writes socket addresses in logs and messages (podnet/addresses.py)."""

from __future__ import annotations

import pytest

from podnet.addresses import address, host_of, hostport


def test_ipv4_and_ipv6() -> None:
    assert hostport("10.244.1.2", 8080) == "10.244.1.2:8080"
    assert hostport("fd00:10:244:1::2", 8080) == "[fd00:10:244:1::2]:8080"
    assert address(("::1", 53)) == "[::1]:53"


@pytest.mark.parametrize("ip", ["10.244.1.2", "fd00:10:244:1::2", "::1", "::"])
def test_host_of_reads_back_what_hostport_wrote(ip: str) -> None:
    assert host_of(hostport(ip, 80)) == ip


@pytest.mark.parametrize("text", ["10.244.1.2", "fd00::1", "node-1", ""])
def test_host_of_a_text_without_a_port_is_the_text(text: str) -> None:
    assert host_of(text) == text
