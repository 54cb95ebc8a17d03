"""The mobile node's userspace tunnel endpoint (``ha.mn.tunnel``) against a home agent peer built here.

Topology (two namespaces with unique names, removed afterwards)::

    peer (home agent role) ──tr0 198.51.100.1/24 + .9 (rogue) ══ mn0 198.51.100.7/24── mn
      lo 192.0.2.1/32 = HA address                                  mnt0 192.0.2.10/32 (the endpoint)

The peer encapsulates by hand with a raw ``IPPROTO_IPIP`` socket bound to the HA address and reads
what the mobile node reverse-tunnels with the same socket.  No daemon is involved.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address

import pytest
from lab_packets import checksum, echo_request, split, udp, udp_checksum_ok

from ha.mn.tunnel import DEFAULT_TABLE, MobileNodeTunnel, TunnelConfig, TunnelError
from ha.netns import NetnsThread

pytestmark = pytest.mark.netns

HA = IPv4Address("192.0.2.1")
CN = IPv4Address("192.0.2.2")
HOME = IPv4Address("192.0.2.10")
OTHER_HOME = IPv4Address("192.0.2.11")
COA = IPv4Address("198.51.100.7")
ROGUE = IPv4Address("198.51.100.9")


def sh(cmd: str) -> str:
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{cmd!r} failed: {proc.stderr.strip()}")
    return proc.stdout


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.fail("namespace tests need root (CI runs as root)")
    tag = f"{os.getpid():x}{uuid.uuid4().hex[:6]}"
    peer, mn = f"mlt-ha-{tag}", f"mlt-mn-{tag}"
    try:
        for ns in (peer, mn):
            sh(f"ip netns add {ns}")
            sh(f"ip -n {ns} link set lo up")
        sh(f"ip -n {peer} link add tr0 type veth peer name mn0 netns {mn}")
        sh(f"ip -n {peer} addr add 198.51.100.1/24 dev tr0")
        sh(f"ip -n {peer} addr add {ROGUE}/24 dev tr0")
        sh(f"ip -n {peer} addr add {HA}/32 dev lo")
        sh(f"ip -n {mn} addr add {COA}/24 dev mn0")
        for ns, dev in ((peer, "tr0"), (mn, "mn0")):
            sh(f"ip netns exec {ns} ethtool -K {dev} tx off tso off gso off")
            sh(f"ip -n {ns} link set {dev} up")
        sh(f"ip -n {mn} route add default via 198.51.100.1")
        yield peer, mn
    finally:
        for ns in (peer, mn):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


async def receive(sock: socket.socket, match: Callable[[bytes], bool], timeout: float = 3.0) -> bytes | None:
    """The first datagram on ``sock`` for which ``match`` holds, or None after ``timeout``."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            while True:
                data = await loop.sock_recv(sock, 65535)
                if match(data):
                    return data
    except TimeoutError:
        return None


def raw_ipip(ns: NetnsThread, bind: IPv4Address) -> socket.socket:
    sock = ns.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IPIP)
    sock.bind((str(bind), 0))
    sock.setblocking(False)
    return sock


def mn_state(mn: str) -> dict[str, str]:
    return {
        "link": sh(f"ip -n {mn} -o link"),
        "rules": sh(f"ip -n {mn} rule"),
        "table": "".join(
            line
            for line in sh(f"ip -n {mn} route show table all").splitlines(True)
            if f"table {DEFAULT_TABLE}" in line
        ),
    }


def test_tunnel_endpoint_both_directions(namespaces: tuple[str, str]) -> None:
    peer_ns, mn_ns = namespaces

    async def scenario() -> MobileNodeTunnel:
        peer, mn = NetnsThread(peer_ns), NetnsThread(mn_ns)
        ha_sock, rogue_sock = raw_ipip(peer, HA), raw_ipip(peer, ROGUE)
        app = mn.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tunnel = MobileNodeTunnel(TunnelConfig(HOME, COA, HA, netns=mn_ns))
        try:
            await tunnel.start()
            app.bind((str(HOME), 7777))  # the home address exists once the endpoint is up
            app.setblocking(False)
            state = mn_state(mn_ns)
            assert "mnt0" in state["link"]
            assert f"from {HOME} lookup {DEFAULT_TABLE}" in state["rules"]
            assert "default dev mnt0" in state["table"]

            # 1. Ping the home address through the tunnel: the MN's kernel answers via the reverse tunnel.
            ha_sock.sendto(echo_request(CN, HOME, 0x4D49, 1, b"mipha-lab-ping"), (str(COA), 0))

            def is_reply(p: bytes) -> bool:
                outer, inner = split(p)
                return outer[12:16] == COA.packed and inner[9] == 1 and inner[20] == 0

            reply = await receive(ha_sock, is_reply)
            assert reply is not None, f"no echo reply through the reverse tunnel: {tunnel.stats}"
            outer, inner = split(reply)
            assert outer[16:20] == HA.packed
            assert inner[12:16] == HOME.packed and inner[16:20] == CN.packed
            assert inner[20:].endswith(b"mipha-lab-ping")
            assert checksum(inner[20:]) == 0, "echo reply carries a wrong ICMP checksum"

            # 2. UDP to a socket bound to the home address, and its answer back through the tunnel.
            ha_sock.sendto(udp(CN, HOME, 7000, 7777, b"to-home"), (str(COA), 0))
            data, peer_addr = await asyncio.wait_for(asyncio.get_running_loop().sock_recvfrom(app, 100), 3)
            assert (data, peer_addr) == (b"to-home", (str(CN), 7000))
            app.sendto(b"from-home", (str(CN), 7000))
            back = await receive(ha_sock, lambda p: p.endswith(b"from-home"))
            assert back is not None, "UDP from the home address was not reverse-tunnelled"
            outer, inner = split(back)
            assert outer[12:16] == COA.packed and inner[12:16] == HOME.packed
            assert udp_checksum_ok(inner), "reverse-tunnelled UDP has a wrong checksum"

            # 3. Refused: an outer source that is not the HA, an inner destination that is not ours.
            rogue_sock.sendto(udp(CN, HOME, 7000, 7777, b"rogue"), (str(COA), 0))
            ha_sock.sendto(udp(CN, OTHER_HOME, 7000, 7777, b"not-mine"), (str(COA), 0))
            ha_sock.sendto(udp(CN, HOME, 7000, 7777, b"after"), (str(COA), 0))
            data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(app, 100), 3)
            assert data == b"after", f"a refused packet was delivered: {data!r}"
            assert tunnel.stats.drops["not-from-home-agent"] == 1
            assert tunnel.stats.drops["not-to-home-address"] == 1
            assert tunnel.stats.decapsulated == 3  # echo, to-home, after
            assert tunnel.stats.encapsulated == 2  # echo reply, from-home

            # 4. Traffic from the care-of address itself is not tunnelled (only the home address is).
            plain = mn.socket(socket.AF_INET, socket.SOCK_DGRAM)
            plain.bind((str(COA), 0))
            plain.sendto(b"direct", (str(HA), 7000))
            plain.close()
            assert await receive(ha_sock, lambda p: p.endswith(b"direct"), timeout=0.3) is None
            assert tunnel.stats.encapsulated == 2
        finally:
            await tunnel.stop()
            for sock in (ha_sock, rogue_sock, app):
                sock.close()
            peer.close()
            mn.close()
        return tunnel

    tunnel = asyncio.run(scenario())
    state = mn_state(mn_ns)
    assert "mnt0" not in state["link"], "TUN device left after stop"
    assert str(HOME) not in state["rules"], "policy rule left after stop"
    assert state["table"] == ""
    assert tunnel.stats.as_dict()["drops"] == {"not-from-home-agent": 1, "not-to-home-address": 1}


def test_reverse_tunnel_drops_foreign_sources(namespaces: tuple[str, str]) -> None:
    """Anything routed into the TUN whose source is not the home address is dropped and counted."""
    peer_ns, mn_ns = namespaces

    async def scenario() -> None:
        peer = NetnsThread(peer_ns)
        ha_sock = raw_ipip(peer, HA)
        async with MobileNodeTunnel(TunnelConfig(HOME, COA, HA, netns=mn_ns)) as tunnel:
            sh(f"ip -n {mn_ns} route add 203.0.113.0/24 dev mnt0")
            with NetnsThread(mn_ns) as mn:
                s = mn.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((str(COA), 0))  # otherwise the kernel picks mnt0's address, the home address
                s.sendto(b"wrong-source", ("203.0.113.5", 9))
                s.close()
            for _ in range(100):
                if tunnel.stats.drops["not-from-home-address"]:
                    break
                await asyncio.sleep(0.01)
            assert tunnel.stats.drops["not-from-home-address"] == 1
            assert tunnel.stats.encapsulated == 0
            assert await receive(ha_sock, lambda p: p.endswith(b"wrong-source"), timeout=0.3) is None
        ha_sock.close()
        peer.close()

    asyncio.run(scenario())


def test_start_failure_leaves_nothing(namespaces: tuple[str, str]) -> None:
    """A care-of address that is not configured is refused with a clear error and no leftovers."""
    _, mn_ns = namespaces
    wrong = TunnelConfig(HOME, IPv4Address("198.51.100.8"), HA, netns=mn_ns)

    async def scenario() -> None:
        with pytest.raises(TunnelError, match=r"198\.51\.100\.8 is not configured"):
            await MobileNodeTunnel(wrong).start()

    asyncio.run(scenario())
    state = mn_state(mn_ns)
    assert "mnt0" not in state["link"]
    assert str(HOME) not in state["rules"]


def test_command_line_runs_until_signalled(namespaces: tuple[str, str]) -> None:
    """``python -m ha.mn.tunnel``: says when it is up, cleans up and prints its counters on SIGTERM."""
    _, mn_ns = namespaces
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ha.mn.tunnel",
            "--netns",
            mn_ns,
            "--home",
            str(HOME),
            "--coa",
            str(COA),
            "--ha",
            str(HA),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline() if proc.stdout else ""
        assert first.startswith("tunnel up: mnt0 carries 192.0.2.10"), first + (proc.stderr.read() or "")
        assert "mnt0" in mn_state(mn_ns)["link"]
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.startswith("tunnel down: {'decapsulated': 0"), out
    assert "mnt0" not in mn_state(mn_ns)["link"]
