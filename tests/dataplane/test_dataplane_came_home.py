"""RFC 5944 §4.6 "came home" gratuitous ARP: sent with the mobile node's own MAC, learnt on the home
link; counted only when sent (issue 11, defect 6).  Real namespaces, the ``tun`` backend, frames
captured on the home link with a packet socket."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataplane_scenario import (
    COA1,
    ETH_P_ARP,
    HA_ADDR,
    HOA,
    Recorder,
    Topology,
    is_arp,
    sh,
)

from ha.dataplane.base import VirtualRouterPlane
from ha.dataplane.factory import create_backend
from ha.dataplane.intents import (
    EnsureTunnel,
    GratuitousArp,
    ProxyArp,
    ReleaseTunnel,
    RemoveHomeRoute,
    SetHomeRoute,
)
from ha.netns import NetnsThread

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


@pytest.fixture
def topo() -> Iterator[Topology]:
    with Topology.built() as t:
        yield t


async def _came_home(
    topo: Topology, *, node_answers: bool
) -> tuple[bytes | None, bytes, list[GratuitousArp]]:
    """Bind HOA, then bring the node home (or not) and deregister; the came-home GARP seen, if any."""
    cn = NetnsThread(topo.cn)
    vr = VirtualRouterPlane(
        name="t", netns=topo.ha, ha_address=HA_ADDR, home_interface="home0", garp_count=2, garp_interval=0.05
    )
    plane = create_backend("tun", vr)
    sent: list[GratuitousArp] = []
    await plane.start()
    plane.on_garp_sent = sent.append
    sock = cn.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind(("cn0", ETH_P_ARP))
    cn_mac = sock.getsockname()[4]
    seen = Recorder(sock)
    try:
        await plane.apply(
            [EnsureTunnel(COA1), SetHomeRoute(HOA, (COA1,)), ProxyArp(HOA, True), GratuitousArp(HOA)]
        )
        await plane.wait_garps()
        if node_answers:  # the node is back on its home link (the cn namespace plays it)
            sh(f"ip -n {topo.cn} addr add {HOA}/24 dev cn0")
        seen.clear()
        await plane.apply(
            [
                RemoveHomeRoute(HOA),
                ReleaseTunnel(COA1),
                ProxyArp(HOA, False),
                GratuitousArp(HOA, for_mobile_node=True),
            ]
        )
        await plane.wait_garps()
        garp = await seen.wait_for(lambda p: is_arp(p, op=2, spa=HOA, tpa=HOA), timeout=3.0)
        return (None if garp is None else garp[22:28]), cn_mac, sent
    finally:
        seen.close()
        await plane.stop()
        cn.close()


def test_came_home_gratuitous_arp_carries_the_nodes_own_mac_and_is_counted(topo: Topology) -> None:
    mac, node_mac, sent = asyncio.run(_came_home(topo, node_answers=True))
    assert mac == node_mac  # the node's hardware address, learnt on the home link
    assert [g.for_mobile_node for g in sent] == [False, True]
    assert sent[1].mn_mac == node_mac.hex(":")


def test_no_answer_on_the_home_link_sends_and_counts_nothing(topo: Topology) -> None:
    mac, _node_mac, sent = asyncio.run(_came_home(topo, node_answers=False))
    assert mac is None
    assert [g.for_mobile_node for g in sent] == [False]  # only the first binding's burst was sent
