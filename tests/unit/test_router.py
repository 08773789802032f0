"""The router's iptables rules for each NAT behaviour (applied for real in the integration tests)."""

from __future__ import annotations

import pytest

from services.router import RouterSetup, main, nat_rules
from shared.config import load_config
from shared.nat import Behaviour, NatMode

pytestmark = pytest.mark.unit


def behaviour(**changes: object) -> RouterSetup:
    """The compose stack's router, read from the defaults and compose's SOCKLAB_DMZ, with changes."""
    cfg = load_config("router", {"SOCKLAB_DMZ": "192.168.50.20"})
    fields: dict[str, object] = {
        "mode": cfg.nat_mode,
        "filtering": cfg.nat_filter,
        "hairpin": cfg.nat_hairpin,
        "lan": cfg.lan_subnet,
        "lan6": cfg.lan6_subnet,
        "wan_address": "198.51.100.2",
        "dmz": cfg.dmz,
    }
    return RouterSetup(**{**fields, **changes})  # type: ignore[arg-type]


def test_cone_masquerades_lan_for_both_families() -> None:
    rules = [" ".join(r) for r in nat_rules(behaviour())]
    assert rules == [
        "iptables -t nat -A SOCKLAB_POST -s 192.168.50.0/24 ! -d 192.168.50.0/24 -j MASQUERADE",
        "ip6tables -t nat -A SOCKLAB_POST -s fd00:50::/64 ! -d fd00:50::/64 -j MASQUERADE",
        "iptables -A SOCKLAB_IN -d 198.51.100.2 -m conntrack --ctstate NEW -j DROP",
        "iptables -A SOCKLAB_FWD -s 192.168.50.0/24 -d 192.168.50.0/24 -m conntrack ! --ctstate DNAT -j DROP",
        "ip6tables -A SOCKLAB_FWD -s fd00:50::/64 -d fd00:50::/64 -m conntrack ! --ctstate DNAT -j DROP",
    ]


def test_no_ipv6_lan_masquerades_ipv4_only() -> None:
    assert [r[0] for r in nat_rules(behaviour(lan6=None))] == ["iptables", "iptables", "iptables"]


def test_symmetric_randomizes_every_mapping() -> None:
    rules = nat_rules(behaviour(mode=NatMode.SYMMETRIC))
    assert len(rules) == 5 and all(r[-1] == "--random-fully" for r in rules[:2])


def test_full_cone_and_hairpin_forward_to_the_dmz_host() -> None:
    rules = [" ".join(r) for r in nat_rules(behaviour(filtering=Behaviour.ENDPOINT_INDEPENDENT, hairpin=True))]
    assert "-d 198.51.100.2 -j DNAT --to-destination 192.168.50.20" in rules[2] and "! -s" in rules[2]
    assert "SNAT --to-source 198.51.100.2" in rules[4]


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"filtering": Behaviour.ADDRESS_DEPENDENT}, "cannot do address-dependent filtering"),
        ({"hairpin": True, "dmz": None}, "need a DMZ host"),
        ({"filtering": Behaviour.ENDPOINT_INDEPENDENT, "dmz": None}, "need a DMZ host"),
    ],
)
def test_settings_the_router_cannot_do_are_refused(changes: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        nat_rules(behaviour(**changes))


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--mode", "cgnat"], "argument --mode: 'cgnat' is not one of cone, symmetric"),
        (["--filter", "address-dependent"], "argument --filter: 'address-dependent' is not one of"),
        (["--hairpin", "yes"], "argument --hairpin: 'yes' is not one of on, off"),
        (["--dmz", "client-lan"], "argument --dmz: "),
    ],
)
def test_command_line_overrides_use_the_configs_parsers(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert error in capsys.readouterr().err
