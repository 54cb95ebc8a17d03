"""The tun backend on this kernel: correspondent — home link — HA — transit — mobile node, for real.

See ``dataplane_scenario.py`` for the topology and every step (ping, UDP, proto 4 on the wire, reverse
tunnel and spoofing, proxy ARP, gratuitous ARP, RFC 2003 ICMP rules, handover, deregistration, teardown).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
from dataplane_scenario import Topology, run_scenario

pytestmark = pytest.mark.netns


@pytest.fixture
def topology() -> Iterator[Topology]:
    if os.geteuid() != 0:
        pytest.fail("namespace tests need root (CI runs as root)")
    with Topology.built() as topo:
        yield topo


@pytest.mark.parametrize("proxy_arp_mode", ["entry", "interface"])
def test_tun_backend_scenario(topology: Topology, proxy_arp_mode: str) -> None:
    steps: list[str] = []
    asyncio.run(run_scenario("tun", topology, log=steps.append, proxy_arp_mode=proxy_arp_mode))
    assert steps[-1] == "stop: zero mipha objects left"
    assert len(steps) == 13
