"""Small, fast checks of the data plane pieces: none backend, factory, names, frames, netlink batches."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether

from ha import netns
from ha.dataplane import nlbatch
from ha.dataplane.base import DataPlaneError, DesiredBinding, VirtualRouterPlane
from ha.dataplane.factory import create_backend, kernel_supports_ipip
from ha.dataplane.icmp import icmp_error
from ha.dataplane.intents import (
    Encapsulation,
    EnsureTunnel,
    GratuitousArp,
    ProxyArp,
    ReleaseTunnel,
    RemoveHomeRoute,
    SetHomeRoute,
)
from ha.dataplane.kernel import garp_frame
from ha.dataplane.none import NonePlane
from ha.dataplane.ownership import coa_from_ifname, tunnel_ifname

A, B = IPv4Address("192.0.2.1"), IPv4Address("198.51.100.7")
H1, H2 = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
VR = VirtualRouterPlane(name="t", netns=None, ha_address=IPv4Address("10.0.0.254"))


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def scratch_ns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.fail("namespace tests need root (CI runs as root)")
    name = f"mt-u-{os.getpid():x}{uuid.uuid4().hex[:6]}"
    sh(f"ip netns add {name}")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


# -- none backend ----------------------------------------------------------------------------------


def test_none_backend_records_and_counts_references() -> None:
    plane = NonePlane(VR)
    intents = [EnsureTunnel(A), SetHomeRoute(H1, (A,)), EnsureTunnel(A), SetHomeRoute(H2, (A,))]
    asyncio.run(plane.apply(intents))
    assert plane.record == intents
    assert [(t.care_of_address, t.binding_count, t.interface) for t in plane.tunnels()] == [(A, 2, None)]
    asyncio.run(plane.apply([RemoveHomeRoute(H1), ReleaseTunnel(A)]))
    assert plane.homes == {H2: (A,)} and plane.refs == {A: 1}
    asyncio.run(plane.apply([ReleaseTunnel(A)]))
    assert plane.tunnels() == []
    with pytest.raises(DataPlaneError):
        asyncio.run(plane.apply([ReleaseTunnel(A)]))


def test_none_backend_resync_replaces_state() -> None:
    plane = NonePlane(VR)
    asyncio.run(plane.apply([EnsureTunnel(A), SetHomeRoute(H1, (A,))]))
    asyncio.run(plane.resync([DesiredBinding(H2, (A, B)), DesiredBinding(H1, (B,))]))
    assert plane.homes == {H2: (A, B), H1: (B,)}
    assert plane.refs == {A: 1, B: 2}


# -- factory ---------------------------------------------------------------------------------------


def test_factory_builds_each_kind_and_refuses_unknown() -> None:
    assert [create_backend(k, VR).name for k in ("ipip", "tun", "none")] == ["ipip", "tun", "none"]
    with pytest.raises(DataPlaneError, match="unknown data plane backend"):
        create_backend("vxlan", VR)


def test_auto_follows_the_kernel(scratch_ns: str) -> None:
    probe = subprocess.run(
        f"ip -n {scratch_ns} link add t0 type ipip local 127.0.0.1 remote 127.0.0.2",
        shell=True,
        capture_output=True,
        check=False,
    )
    has_ipip = probe.returncode == 0
    assert kernel_supports_ipip() is has_ipip
    assert create_backend("auto", VR).name == ("ipip" if has_ipip else "tun")


# -- names and frames ------------------------------------------------------------------------------


@pytest.mark.parametrize("coa", ["0.0.0.1", "192.0.2.1", "255.255.255.254"])
def test_tunnel_names_fit_and_round_trip(coa: str) -> None:
    for prefix in ("mip-", "mig-"):
        name = tunnel_ifname(IPv4Address(coa), prefix)
        assert len(name) <= 15
        assert coa_from_ifname(name) == IPv4Address(coa)
    assert coa_from_ifname("mip-tun") is None
    assert coa_from_ifname("eth0") is None
    assert coa_from_ifname("mip-zzzzzzzz") is None


def test_gratuitous_arp_frame_decodes() -> None:
    frame = Ether(garp_frame(bytes.fromhex("020000000001"), H1))
    assert frame.dst == "ff:ff:ff:ff:ff:ff" and frame.src == "02:00:00:00:00:01"
    arp = frame[ARP]
    assert arp.op == 1 and arp.psrc == arp.pdst == str(H1) and arp.hwsrc == "02:00:00:00:00:01"


def test_icmp_error_quotes_header_and_carries_mtu() -> None:
    offending = bytes(IP(src="10.1.0.10", dst=str(H1), flags="DF") / (b"x" * 1472))
    raw = icmp_error(3, 4, offending, mtu=1480)
    icmp = ICMP(raw)
    assert icmp.type == 3 and icmp.code == 4 and icmp.nexthopmtu == 1480
    assert raw[8:] == offending[:28]
    again = ICMP(raw)
    del again.chksum
    assert ICMP(bytes(again)).chksum == icmp.chksum  # checksum is right


# -- netns ownership -------------------------------------------------------------------------------


def test_netns_created_by_mipha_is_deleted_foreign_one_is_not(scratch_ns: str) -> None:
    ours = f"mt-own-{os.getpid():x}{uuid.uuid4().hex[:6]}"
    try:
        assert netns.ensure_netns(ours) is True
        assert netns.is_owned(ours) and netns.netns_exists(ours)
        assert netns.ensure_netns(ours) is False
        assert netns.ensure_netns(scratch_ns) is False  # exists already: adopted, not owned
        assert not netns.is_owned(scratch_ns)
        assert netns.release_netns(scratch_ns) is False
        assert netns.netns_exists(scratch_ns)
        assert netns.release_netns(ours) is True
        assert not netns.netns_exists(ours) and not netns.is_owned(ours)
    finally:
        netns.release_netns(ours)
    assert netns.netns_for_vr("default") is None
    assert netns.netns_for_vr("blue") == "mipha-blue"
    assert netns.netns_for_vr("blue", "custom") == "custom"


def test_netns_thread_sockets_and_sysctls_live_in_the_namespace(scratch_ns: str) -> None:
    sh(f"ip -n {scratch_ns} link set lo up")
    sh(f"ip -n {scratch_ns} addr add 203.0.113.77/32 dev lo")
    with netns.NetnsThread(scratch_ns) as t:
        sock = t.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("203.0.113.77", 0))  # only exists inside the namespace
        sock.close()
        t.call(netns.write_sysctl, ("net", "ipv4", "ip_forward"), 1)
        assert t.call(netns.read_sysctl, ("net", "ipv4", "ip_forward")) == "1"
    assert sh(f"ip netns exec {scratch_ns} cat /proc/sys/net/ipv4/ip_forward").strip() == "1"
    with pytest.raises(netns.NetnsError):
        netns.NetnsThread("mt-no-such-namespace")


def test_backend_creates_a_missing_vr_namespace_and_marks_it() -> None:
    name = f"mt-vr-{os.getpid():x}{uuid.uuid4().hex[:6]}"
    vr = VirtualRouterPlane(name="blue", netns=name, ha_address=IPv4Address("127.0.0.1"))

    async def scenario() -> None:
        plane = create_backend("tun", vr)
        await plane.start()
        try:
            assert netns.netns_exists(name) and netns.is_owned(name)
            assert sh(f"ip netns exec {name} cat /proc/sys/net/ipv4/ip_forward").strip() == "1"
            assert "434:\tfrom all lookup 434 proto 245" in sh(f"ip -n {name} rule")
        finally:
            await plane.stop(flush=True)

    try:
        asyncio.run(scenario())
        assert netns.netns_exists(name)  # stopping a backend does not delete the VR
        assert netns.release_netns(name) is True
        assert not netns.netns_exists(name)
    finally:
        netns.release_netns(name)


def test_failed_start_leaves_no_thread_and_no_kernel_state(scratch_ns: str) -> None:
    import threading

    vr = VirtualRouterPlane(
        name="u", netns=scratch_ns, ha_address=IPv4Address("127.0.0.1"), home_interface="nosuch0"
    )
    before = {t.name for t in threading.enumerate()}
    plane = create_backend("tun", vr)
    with pytest.raises(DataPlaneError, match="home interface 'nosuch0' not found"):
        asyncio.run(plane.start())
    leaked = {t.name for t in threading.enumerate()} - before
    assert not [name for name in leaked if name.startswith("netns-")]
    assert "proto 245" not in sh(f"ip -n {scratch_ns} rule")
    assert "mip-tun" not in sh(f"ip -n {scratch_ns} link")


# -- batched netlink -------------------------------------------------------------------------------


def test_batched_routes_and_proxies_round_trip_through_the_kernel(scratch_ns: str) -> None:
    sh(f"ip -n {scratch_ns} link add d0 type veth peer name d1")
    sh(f"ip -n {scratch_ns} link set d0 up")
    sh(f"ip -n {scratch_ns} route add 10.9.0.1/32 dev d0 table 434")  # same table, other protocol
    sh(f"ip -n {scratch_ns} route add 10.9.0.2/32 dev d0 table 435 proto 245")  # other table
    sh(f"ip -n {scratch_ns} neigh add proxy 10.9.0.3 dev d0")  # proxy entry without protocol
    addrs = [IPv4Address("10.8.0.0") + i for i in range(3000)]
    with netns.NetnsThread(scratch_ns) as t:
        nl = t.call(nlbatch.RtnlBatch)
        ifindex = t.call(socket.if_nametoindex, "d0")
        add = nlbatch.route_template(add=True, table=434, proto=245, oif=ifindex)
        assert t.call(nl.run, add, addrs) == {}
        assert t.call(nl.run, nlbatch.proxy_template(add=True, ifindex=ifindex, proto=245), addrs[:10]) == {}
        routes = t.call(nl.dump_routes, 434, 245)
        assert {r.dst for r in routes} == set(addrs) and {r.oif for r in routes} == {ifindex}
        proxies = {p.dst: p.proto for p in t.call(nl.dump_proxies)}
        assert proxies == {**dict.fromkeys(addrs[:10], 245), IPv4Address("10.9.0.3"): 0}
        # every refusal is reported against its own address
        bad = nlbatch.route_template(add=True, table=434, proto=245, oif=99999)
        failures = t.call(nl.run, bad, [IPv4Address("10.7.0.1"), IPv4Address("10.7.0.2")])
        assert failures == {IPv4Address("10.7.0.1"): errno.ENODEV, IPv4Address("10.7.0.2"): errno.ENODEV}
        delete = nlbatch.route_template(add=False, table=434, proto=245)
        missing = IPv4Address("10.6.0.1")
        assert t.call(lambda: nl.run(delete, [*addrs, missing], ignore=nlbatch.IGNORE_MISSING)) == {}
        assert t.call(nl.run, delete, [missing]) == {missing: errno.ESRCH}
        assert t.call(nl.dump_routes, 434, 245) == []
        t.call(nl.close)
    # iproute2 sees what the batches did, and the look-alikes are intact
    [left] = sh(f"ip -n {scratch_ns} route show table 434").splitlines()
    assert left.split()[:3] == ["10.9.0.1", "dev", "d0"]
    assert "10.9.0.2" in sh(f"ip -n {scratch_ns} route show table 435")
    assert sh(f"ip -n {scratch_ns} neigh show proxy 10.8.0.5").split()[-2:] == ["proto", "245"]


# -- kernel backend state handling (tun backend on this kernel) ------------------------------------


def test_tun_backend_sets_sysctls_and_refuses_inconsistent_intents(scratch_ns: str) -> None:
    sh(f"ip -n {scratch_ns} link set lo up")
    sh(f"ip -n {scratch_ns} link add home0 type veth peer name peer0")
    sh(f"ip -n {scratch_ns} addr add 10.0.0.254/24 dev home0")
    sh(f"ip -n {scratch_ns} link set home0 up")
    vr = VirtualRouterPlane(
        name="u", netns=scratch_ns, ha_address=IPv4Address("10.0.0.254"), home_interface="home0"
    )

    async def scenario() -> None:
        plane = create_backend("tun", vr)
        await plane.start()
        try:
            with pytest.raises(DataPlaneError, match="no tunnel"):
                await plane.apply([SetHomeRoute(H1, (A,))])
            with pytest.raises(DataPlaneError, match="minimal"):
                await plane.apply([EnsureTunnel(A, Encapsulation.MINIMAL)])
            intents: list = [EnsureTunnel(A)]
            homes = [IPv4Address("10.0.1.0") + i for i in range(2000)]
            for h in homes:
                intents += [SetHomeRoute(h, (A,)), ProxyArp(h, True)]
            intents.append(GratuitousArp(homes[0]))
            await plane.apply(intents)
            await plane.wait_garps()  # type: ignore[attr-defined]
            assert plane.garps_sent == vr.garp_count  # type: ignore[attr-defined]
            routes = sh(f"ip -n {scratch_ns} route show table 434 proto 245").splitlines()
            assert len(routes) == 2000 and all("dev mip-tun" in r for r in routes)
            assert len(sh(f"ip -n {scratch_ns} neigh show proxy dev home0").splitlines()) == 2000
            ns = f"ip netns exec {scratch_ns} cat /proc/sys/net"
            assert sh(f"{ns}/ipv4/ip_forward").strip() == "1"
            assert sh(f"{ns}/ipv4/neigh/home0/proxy_delay").strip() == "0"
            assert sh(f"{ns}/ipv4/conf/mip-tun/rp_filter").strip() == "2"
            assert sh(f"{ns}/ipv6/conf/mip-tun/disable_ipv6").strip() == "1"
            [tunnel] = plane.tunnels()
            assert tunnel.binding_count == 1 and tunnel.interface == "mip-tun"
        finally:
            await plane.stop(flush=True)
        assert sh(f"ip -n {scratch_ns} route show table 434") == ""
        assert sh(f"ip -n {scratch_ns} neigh show proxy") == ""
        assert "proto 245" not in sh(f"ip -n {scratch_ns} rule")

    asyncio.run(scenario())
