"""The lab topology + the mobile node's tunnel endpoint + the home agent's real ``tun`` backend, no daemon.

``mipha lab`` builds correspondent — home link — HA — transit — mobile node; here the HA side is the
``tun`` data plane driven directly with the intents one registration produces, and the mobile node
runs :class:`ha.mn.tunnel.MobileNodeTunnel`.  Ping (the lab's own ICMP echo) and a TCP transfer from
the correspondent to a socket bound to the home address must both work through the tunnel and the
reverse tunnel.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ha.dataplane.base import VirtualRouterPlane
from ha.dataplane.factory import create_backend
from ha.dataplane.intents import EnsureTunnel, GratuitousArp, ProxyArp, SetHomeRoute
from ha.mn.tunnel import MobileNodeTunnel, TunnelConfig
from ha.netns import NetnsThread
from mipha import lab as labmod

pytestmark = pytest.mark.netns


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[labmod.Lab]:
    if os.geteuid() != 0:
        pytest.fail("namespace tests need root (CI runs as root)")
    instance = labmod.Lab(prefix=f"mipha-lab-t{uuid.uuid4().hex[:8]}", directory=tmp_path / "lab")
    try:
        labmod.build_topology(instance)
        yield instance
    finally:
        labmod.delete_topology(instance)
        for ns in instance.namespaces:  # whatever happened before the record was written
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def test_ping_and_tcp_through_the_tunnel(lab: labmod.Lab) -> None:
    data = os.urandom(1 << 20)

    async def scenario() -> tuple[int, bytes, dict[str, object]]:
        vr = VirtualRouterPlane(
            name="lab", netns=lab.ha, ha_address=labmod.HA_ADDR, home_interface="home0", garp_count=1
        )
        plane = create_backend("tun", vr)
        tunnel = MobileNodeTunnel(TunnelConfig(labmod.HOME_ADDR, labmod.COA, labmod.HA_ADDR, netns=lab.mn))
        mn, cn = NetnsThread(lab.mn), NetnsThread(lab.cn)
        server = client = None
        try:
            await plane.start()
            await tunnel.start()
            home = labmod.HOME_ADDR
            await plane.apply(
                [
                    EnsureTunnel(labmod.COA),
                    SetHomeRoute(home, (labmod.COA,)),
                    ProxyArp(home, True),
                    GratuitousArp(home),
                ]
            )
            replies = await asyncio.to_thread(labmod.ping, lab, 3)

            # TCP: 1 MiB from the correspondent to a listener bound to the home address, digest back.
            server = mn.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.bind((str(home), 5001))
            server.listen(1)
            server.setblocking(False)
            client = cn.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.setblocking(False)
            loop = asyncio.get_running_loop()

            async def serve() -> bytes:
                conn, _ = await loop.sock_accept(server)
                with conn:
                    digest = hashlib.sha256()
                    while chunk := await loop.sock_recv(conn, 65536):
                        digest.update(chunk)
                    await loop.sock_sendall(conn, digest.digest())
                    return digest.digest()

            async def send() -> bytes:
                await loop.sock_connect(client, (str(home), 5001))
                await loop.sock_sendall(client, data)
                client.shutdown(socket.SHUT_WR)
                echoed = b""  # until the server closes: one recv may return part of the digest
                while chunk := await loop.sock_recv(client, 64):
                    echoed += chunk
                return echoed

            served, echoed = await asyncio.wait_for(asyncio.gather(serve(), send()), 30)
            assert served == echoed
            return replies, echoed, tunnel.stats.as_dict()
        finally:
            for sock in (server, client):
                if sock is not None:
                    sock.close()
            await tunnel.stop()
            await plane.stop(flush=True)
            mn.close()
            cn.close()

    replies, digest, stats = asyncio.run(scenario())
    assert replies == 3
    assert digest == hashlib.sha256(data).digest(), "TCP payload corrupted through the tunnels"
    assert stats["drops"] == {}, stats
    assert stats["decapsulated_octets"] > len(data)
