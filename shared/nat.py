"""NAT words, defined once: RFC 4787's mapping and filtering behaviours and the router's modes.

RFC 4787 (sections 4.1 and 5) names three behaviours for both mapping and filtering; natcheck
(RFC 5780) may also find no NAT at all (mapping "none") or be unable to tell ("unknown").
"""

from __future__ import annotations

from enum import StrEnum


class Behaviour(StrEnum):
    """A NAT's mapping or filtering behaviour, as RFC 4787 words it, or what natcheck could tell."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    NONE = "none"
    UNKNOWN = "unknown"


RFC4787_BEHAVIOURS = (
    Behaviour.ENDPOINT_INDEPENDENT,
    Behaviour.ADDRESS_DEPENDENT,
    Behaviour.ADDRESS_AND_PORT_DEPENDENT,
)


class NatMode(StrEnum):
    """The router's mapping: cone keeps one mapping per internal name, symmetric one per destination."""

    CONE = "cone"
    SYMMETRIC = "symmetric"


MODE_MAPPING = {
    NatMode.CONE: Behaviour.ENDPOINT_INDEPENDENT,
    NatMode.SYMMETRIC: Behaviour.ADDRESS_AND_PORT_DEPENDENT,
}

ROUTER_FILTERS = (Behaviour.ADDRESS_AND_PORT_DEPENDENT, Behaviour.ENDPOINT_INDEPENDENT)
