"""The pure half of discovery: TXT records and which one address mDNS binds to."""

from __future__ import annotations

import pytest

from podnet.discovery import (
    Advertisement,
    check_interface,
    controlplane_advertisement,
    default_interface,
    parse_txt,
)


def encoded(txt: dict[str, str]) -> dict[bytes, bytes | None]:
    return {k.encode(): v.encode() for k, v in txt.items()}


def test_txt_round_trips_and_carries_only_addressing() -> None:
    ad = Advertisement(cluster="lab", api="https://198.18.0.11:6443", dns="198.18.0.11:53")
    assert set(ad.txt()) == {"txtvers", "cluster", "api", "dns"}
    assert parse_txt(encoded(ad.txt())) == ad


@pytest.mark.parametrize(("change", "why"), [
    ({"txtvers": "2"}, "txtvers"),
    ({"api": "http://198.18.0.11:6443"}, "api: expected https://host:port"),
    ({"api": "https://198.18.0.11"}, "api: expected https://host:port"),
    ({"api": "https://198.18.0.11:99999"}, "api: expected https://host:port"),
    ({"api": "https://198.18.0.11:6443/evil"}, "api: expected https://host:port"),
    ({"dns": "198.18.0.11"}, "dns: expected host:port"),
    ({"cluster": ""}, "missing TXT keys: cluster"),
])
def test_malformed_advertisements_are_rejected(change: dict[str, str], why: str) -> None:
    txt = {"txtvers": "1", "cluster": "lab", "api": "https://198.18.0.11:6443",
           "dns": "198.18.0.11:53", **change}
    with pytest.raises(ValueError, match=why):
        parse_txt(encoded(txt))


def test_flag_keys_and_unknown_keys_are_ignored() -> None:
    txt: dict[bytes, bytes | None] = {**encoded({"txtvers": "1", "cluster": "c",
                                                 "api": "https://127.0.0.1:1", "dns": "x:2",
                                                 "extra": "y"}), b"flag": None}
    assert parse_txt(txt).api == "https://127.0.0.1:1"


def test_interface_defaults_to_the_listen_address_never_a_wildcard() -> None:
    assert default_interface("127.0.0.1") == "127.0.0.1"
    assert default_interface("198.18.0.12") == "198.18.0.12"
    assert default_interface("0.0.0.0") is None
    assert default_interface("controlplane") is None
    assert default_interface("::1") is None
    assert check_interface("198.18.0.12") is None
    assert "one interface" in str(check_interface("0.0.0.0"))
    assert "IPv4" in str(check_interface("eth0"))


def test_wildcard_listen_addresses_are_advertised_as_the_interface() -> None:
    ad = controlplane_advertisement("c", "198.18.0.11", "0.0.0.0", 6443, "0.0.0.0", 53)
    assert (ad.api, ad.dns) == ("https://198.18.0.11:6443", "198.18.0.11:53")
    ad = controlplane_advertisement("c", "127.0.0.1", "127.0.0.1", 1, "127.0.0.1", 2)
    assert (ad.api, ad.dns) == ("https://127.0.0.1:1", "127.0.0.1:2")
