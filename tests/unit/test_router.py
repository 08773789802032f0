"""The router's iptables rules for each NAT behaviour (applied for real in the integration tests)."""

from __future__ import annotations

import pytest

from services.router import NatBehaviour, nat_rules

pytestmark = pytest.mark.unit


def behaviour(**changes: object) -> NatBehaviour:
    fields: dict[str, object] = {
        "mode": "cone",
        "filtering": "address-and-port-dependent",
        "hairpin": False,
        "lan": "192.168.50.0/24",
        "lan6": "fd00:50::/64",
        "wan_address": "198.51.100.2",
        "dmz": "192.168.50.20",
    }
    return NatBehaviour(**{**fields, **changes})  # type: ignore[arg-type]


def test_cone_masquerades_lan_for_both_families() -> None:
    rules = [" ".join(r) for r in nat_rules(behaviour())]
    assert rules == [
        "iptables -t nat -A SOCKLAB_POST -s 192.168.50.0/24 ! -d 192.168.50.0/24 -j MASQUERADE",
        "ip6tables -t nat -A SOCKLAB_POST -s fd00:50::/64 ! -d fd00:50::/64 -j MASQUERADE",
    ]


def test_symmetric_randomizes_every_mapping() -> None:
    assert all(r[-1] == "--random-fully" for r in nat_rules(behaviour(mode="symmetric")))


def test_full_cone_and_hairpin_forward_to_the_dmz_host() -> None:
    rules = [" ".join(r) for r in nat_rules(behaviour(filtering="endpoint-independent", hairpin=True))]
    assert "-d 198.51.100.2 -j DNAT --to-destination 192.168.50.20" in rules[2] and "! -s" in rules[2]
    assert "SNAT --to-source 198.51.100.2" in rules[4]


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"mode": "cgnat"}, "NAT_MODE 'cgnat' is not one of cone, symmetric"),
        ({"filtering": "open"}, "NAT_FILTER 'open' is not one of"),
        ({"hairpin": True, "dmz": None}, "need a DMZ host"),
    ],
)
def test_bad_settings_are_refused(changes: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        nat_rules(behaviour(**changes))
