"""Run inside client-lan by test_stun: aioice (Debian's python3-aioice), an ICE agent, gathers a server-reflexive
candidate with RFC 8489 Binding against the STUN server in argv[1]; prints its candidates as one JSON line."""

from __future__ import annotations

import asyncio
import json
import sys

import aioice


async def gather(stun_host: str) -> list[list[object]]:
    """Every local candidate aioice found: type, host, port and the address it relates to."""
    connection = aioice.Connection(ice_controlling=True, stun_server=(stun_host, 3478), use_ipv6=False)
    await connection.gather_candidates()
    candidates = connection.local_candidates
    await connection.close()
    return [[c.type, c.host, c.port, c.related_address, c.related_port] for c in candidates]


print(json.dumps(asyncio.run(gather(sys.argv[1]))))
