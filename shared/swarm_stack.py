"""The swarm's stack file, derived from docker-compose.yml so the one-host stack and the swarm share one topology.

Input is Compose's own reading of the file (`docker compose config --format json`: anchors merged, variables
set); output is a file `docker stack deploy` takes (JSON is YAML). What a swarm cannot do as compose does it
is changed here, each rule once:
  - only the services that need no fixed address or NAT: collector, registry, echo, client-wan (the routers and
    the LAN clients need addresses known before start, which swarm ignores, and routes through them);
  - no fixed ipv4_address/ipv6_address (swarm ignores them) and IPv4 only; every service is also known as
    NAME.NETWORK on each of its networks, a name that never answers with another network's address;
  - environment naming a fixed address names a service instead (SWARM_ENV); SOCKLAB_NODE is the node's name;
  - a shell wrapper that changes the network as root and then drops to socklab runs its socklab command only;
    `--after SERVICE` is dropped (ready files live in a volume of each node, not shared between nodes);
  - published ports in `mode: host` on the node (the ingress routing mesh needs IPVS), same port;
  - `endpoint_mode: dnsrr` (a VIP needs IPVS), a placement label per service (node.labels.socklab.NAME);
  - health checks every 2 s: on a swarm they are how readiness is known across nodes;
  - the stack's CurveZMQ keys (the `keys` volume, shared.curve) are one set for the whole swarm: made on the
    host by `socklab swarm up`, copied into every node at NODE_KEYS and bind-mounted read-only from there;
  - the hardening a swarm service can carry (read-only root, its tmpfs, dropped capabilities, the memory
    limit); a swarm service has no no-new-privileges or pids limit in this stack file version.
"""

from __future__ import annotations

import shlex
from typing import Any

SWARM_SERVICES = ("collector", "registry", "echo", "client-wan")
STACK_VERSION = "3.8"
HEALTH_INTERVAL = "2s"
SWARM_ENV = {"SOCKLAB_NODE": "{{.Node.Hostname}}", "SOCKLAB_REGISTRY": "registry.wan:5300"}
# Fixed addresses with no meaning on an overlay (RFC 5780's second address is added by a root wrapper).
DROPPED_ENV = ("SOCKLAB_STUN_ADDRESSES",)
# Hosts outside the swarm register with the registry through its node.
EXTRA_PORTS = {"registry": ({"target": 5300, "protocol": "tcp"},)}
DROP_TO_SOCKLAB = "--init-groups"
HARDENING = ("read_only", "tmpfs", "cap_drop")
KEYS_VOLUME = "keys"
NODE_KEYS = "/var/lib/socklab-keys"  # in each node: the swarm's keys, copied there before the stack is deployed


def placement_label(service: str) -> str:
    """The node label that places a service: `docker node update --label-add socklab.echo=true NODE`."""
    return f"socklab.{service}"


def swarm_command(command: list[str]) -> list[str]:
    """The socklab command a service runs on a swarm: without its root wrapper and without --after."""
    if command[:2] == ["sh", "-c"] and DROP_TO_SOCKLAB in command[2]:
        command = shlex.split(command[2].rsplit(DROP_TO_SOCKLAB, 1)[1])
    kept: list[str] = []
    skip = False
    for word in command:
        if skip:
            skip = False
        elif word == "--after":
            skip = True
        else:
            kept.append(word)
    return kept


def host_ports(ports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every container port once, published on the same port of the node that runs the task."""
    seen = dict.fromkeys((int(p["target"]), p.get("protocol", "tcp")) for p in ports)
    return [{"target": t, "published": t, "protocol": proto, "mode": "host"} for t, proto in seen]


def derive_service(name: str, service: dict[str, Any]) -> dict[str, Any]:
    """One compose service as a swarm service."""
    environment = {k: v for k, v in service.get("environment", {}).items() if k not in DROPPED_ENV}
    environment.update({k: v for k, v in SWARM_ENV.items() if k in environment or k == "SOCKLAB_NODE"})
    networks = {
        net: {"aliases": [*(attrs or {}).get("aliases", []), f"{name}.{net}"]}
        for net, attrs in service["networks"].items()
    }
    volumes = [
        {"type": "bind", "source": NODE_KEYS, "target": v["target"], "read_only": True}
        if v["source"] == KEYS_VOLUME
        else {"type": v["type"], "source": v["source"], "target": v["target"]}
        for v in service.get("volumes", [])
    ]
    derived: dict[str, Any] = {
        "image": service["image"],
        "command": swarm_command(service["command"]),
        "environment": environment,
        "networks": networks,
        "volumes": volumes,
        "init": service.get("init", False),
        "healthcheck": {**service["healthcheck"], "interval": HEALTH_INTERVAL},
        "deploy": {
            "endpoint_mode": "dnsrr",
            "placement": {"constraints": [f"node.labels.{placement_label(name)} == true"]},
            "restart_policy": {"condition": "any", "delay": "1s"},
        },
    }
    derived.update({key: service[key] for key in HARDENING if key in service})
    if "mem_limit" in service:
        derived["deploy"]["resources"] = {"limits": {"memory": str(service["mem_limit"])}}
    ports = host_ports([*service.get("ports", []), *EXTRA_PORTS.get(name, ())])
    if ports:
        derived["ports"] = ports
    return derived


def derive_network(network: dict[str, Any]) -> dict[str, Any]:
    """A compose bridge network as an attachable overlay with the same IPv4 subnet."""
    subnets = [c for c in network.get("ipam", {}).get("config", []) if ":" not in c["subnet"]]
    return {"driver": "overlay", "attachable": True, "ipam": {"config": subnets}}


def derive_stack(config: dict[str, Any]) -> dict[str, Any]:
    """The stack file for `docker stack deploy`, from `docker compose config --format json`'s output."""
    services = {name: derive_service(name, config["services"][name]) for name in SWARM_SERVICES}
    networks = sorted({net for service in services.values() for net in service["networks"]})
    volumes = sorted(
        {v["source"] for service in services.values() for v in service["volumes"] if v["type"] == "volume"}
    )
    return {
        "version": STACK_VERSION,
        "services": services,
        "networks": {net: derive_network(config["networks"][net]) for net in networks},
        "volumes": {
            vol: {k: v for k, v in config["volumes"][vol].items() if k in ("driver", "driver_opts")} for vol in volumes
        },
    }
