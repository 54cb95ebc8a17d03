"""RFC 3543 end to end: the daemon and a foreign agent stand-in built here with raw UDP sockets.

Topology: ``ha`` (the daemon's virtual router, HA 10.1.0.1) ══ ``fa`` (192.0.2.2, the foreign agent).
The stand-in relays a registration (the mobile node's MN-HA part, then its Revocation Support
extension and FA-HA authentication, all with ``struct`` + ``hmac``, not ``ha.protocol``), checks the
echoed extension, then:

- ``clear-bindings`` over NETCONF: the home agent's Registration Revocation reaches the agent's UDP 434,
  is retransmitted while unacknowledged, and stops once the agent acknowledges it;
- the agent revokes a second registration itself: the binding goes (``binding-removed`` reason
  ``revoked``) and the home agent acknowledges;
- a subscriber known only to a real FreeRADIUS registers through the agent, and a Disconnect-Request
  (RFC 5176, from radclient) ends it: the home agent revokes it at the agent (I as negotiated),
  ``binding-removed`` says ``cleared``, the revocation counters count it;

tshark captures the link and decodes every datagram (types 1, 3, 7, 15) without "malformed".
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from lxml import etree
from ncclient import manager

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "dataplane"))
sys.path.insert(0, str(ROOT / "tests" / "aaa"))

from daemon_harness import KEY_HEX, KEY_YANG, NS, Daemon  # noqa: E402
from dataplane_scenario import sh  # noqa: E402
from free_ports import free_port  # noqa: E402
from freeradius import FreeRadius  # noqa: E402
from mip_capture import Capture, statistics  # noqa: E402
from test_e2e_tun import notification  # noqa: E402

from ha.netns import NetnsThread  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

HA = "10.1.0.1"
HOME = "10.1.0.100"
FA = "192.0.2.2"
KEY = bytes.fromhex(KEY_HEX)
FA_KEY = bytes.fromhex("ffeeddccbbaa99887766554433221100")
FA_KEY_YANG = ":".join(FA_KEY.hex()[i : i + 2] for i in range(0, 32, 2))
FA_SPI = 700


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    tag = f"{os.getpid():x}{os.urandom(3).hex()}"
    ha, fa = f"mr-ha-{tag}", f"mr-fa-{tag}"
    try:
        for ns in (ha, fa):
            sh(f"ip netns add {ns}")
            sh(f"ip -n {ns} link set lo up")
        sh(f"ip -n {ha} link add wan0 type veth peer name fa0 netns {fa}")
        sh(f"ip -n {ha} addr add 192.0.2.1/24 dev wan0")
        sh(f"ip -n {ha} addr add {HA}/32 dev lo")
        sh(f"ip -n {fa} addr add {FA}/24 dev fa0")
        sh(f"ip -n {ha} link set wan0 up")
        sh(f"ip -n {fa} link set fa0 up")
        sh(f"ip -n {fa} route add {HA}/32 via 192.0.2.1")
        yield ha, fa
    finally:
        for ns in (ha, fa):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@dataclass
class StandIn:
    """The running daemon, two NETCONF sessions (``listener`` subscribed) and the agent's UDP 434 socket."""

    ha_ns: str
    tmp_path: Path
    agent: socket.socket
    m: manager.Manager
    listener: manager.Manager
    capture: Capture | None = None

    def configure(self, config: str) -> None:
        """Commit the virtual router, then capture its link to the agent."""
        self.m.edit_config(target="running", config=config)
        self.capture = Capture(self.ha_ns, self.tmp_path / "fa-link.pcap", interface="wan0")

    def captured(self, *extra: str) -> list[dict[str, str]]:
        """The link's datagrams, once every message type was seen, each decoded without "malformed"."""
        assert self.capture is not None
        self.capture.wait_for({"1", "3", "7", "15"})
        self.capture.stop()
        rows = self.capture.decode(*extra)
        assert all(r["_ws.malformed"] == "" for r in rows), rows
        assert {"1", "3", "7", "15"} <= {r["mip.type"] for r in rows}, rows
        return rows


@pytest.fixture
def stand_in(namespaces: tuple[str, str], tmp_path: Path) -> Iterator[StandIn]:
    """The foreign agent stand-in's set-up, shared by both tests: stopped by PID, sockets closed."""
    ha_ns, fa_ns = namespaces
    daemon = Daemon(tmp_path, free_port())
    thread = NetnsThread(fa_ns)
    agent = thread.socket(socket.AF_INET, socket.SOCK_DGRAM)
    agent.bind((FA, 434))
    link: StandIn | None = None
    try:
        daemon.start()
        with daemon.connect() as m, daemon.connect() as listener:
            listener.create_subscription()
            link = StandIn(ha_ns, tmp_path, agent, m, listener)
            yield link
    finally:
        if link is not None and link.capture is not None:
            link.capture.stop()
        agent.close()
        thread.close()
        daemon.stop()


def vr_config(ha_ns: str) -> str:
    return f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<virtual-routers xmlns="{NS}"><virtual-router><name>rev</name><netns>{ha_ns}</netns>
  <home-agent><address>{HA}</address><revocation><retransmit-interval>1</retransmit-interval>
    <max-attempts>4</max-attempts></revocation></home-agent>
  <mobile-node><name>mn1</name><home-address>{HOME}</home-address>
    <security-association><spi>256</spi><key>{KEY_YANG}</key></security-association></mobile-node>
  <foreign-agent><address>{FA}</address>
    <security-association><spi>{FA_SPI}</spi><key>{FA_KEY_YANG}</key></security-association></foreign-agent>
</virtual-router></virtual-routers></config>"""


def fa_signed(data: bytes) -> bytes:
    data += struct.pack("!BBI", 34, 20, FA_SPI)
    return data + hmac.new(FA_KEY, data, hashlib.md5).digest()


def relayed_request(fa_timestamp: int) -> bytes:
    """The mobile node's request (MN-HA) with the agent's Revocation Support and FA-HA appended."""
    ident = ((int(time.time()) + 2_208_988_800) << 32) | int.from_bytes(os.urandom(4), "big")
    fixed = struct.pack("!BBHIIIQ", 1, 0x02, 300, int(IPv4Address(HOME)), int(IPv4Address(HA)),
                        int(IPv4Address(FA)), ident)  # fmt: skip
    covered = fixed + struct.pack("!BBI", 32, 20, 256)
    mn = covered + hmac.new(KEY, covered, hashlib.md5).digest()
    return fa_signed(mn + struct.pack("!BBHI", 137, 6, 0x8000, fa_timestamp))


def check_fa_ha(data: bytes) -> None:
    assert data[-22:-16] == struct.pack("!BBI", 34, 20, FA_SPI), data.hex()
    assert hmac.new(FA_KEY, data[:-16], hashlib.md5).digest() == data[-16:], "FA-HA does not verify"


def receive(sock: socket.socket, kind: int, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, source = sock.recvfrom(2048)
        except TimeoutError:
            break
        if data[:1] == bytes((kind,)) and source[0] == HA:
            return data
    raise AssertionError(f"no message of type {kind} from the home agent within {timeout} s")


def bindings(m) -> list[etree._Element]:  # type: ignore[no-untyped-def]
    flt = f'<virtual-routers xmlns="{NS}"><virtual-router><name>rev</name><home-agent><bindings/></home-agent></virtual-router></virtual-routers>'
    return etree.fromstring(m.get(filter=("subtree", flt)).data_xml.encode()).findall(f".//{{{NS}}}binding")


def test_revocation_both_ways_with_a_foreign_agent_stand_in(stand_in: StandIn) -> None:
    agent, m, listener = stand_in.agent, stand_in.m, stand_in.listener
    stand_in.configure(vr_config(stand_in.ha_ns))

    # Registration relayed by the agent: the reply echoes Revocation Support before FA-HA.
    agent.sendto(relayed_request(fa_timestamp=1000), (HA, 434))
    reply = receive(agent, 3)
    assert reply[1] == 0, f"code {reply[1]}"
    check_fa_ha(reply)
    assert reply[-30:-22][:2] == bytes((137, 6)) and reply[-30:-22][2:4] == b"\x80\x00"
    assert len(bindings(m)) == 1

    # clear-bindings: a revocation, retransmitted until acknowledged.
    rpc = f'<clear-bindings xmlns="{NS}"><virtual-router>rev</virtual-router></clear-bindings>'
    m.dispatch(etree.fromstring(rpc))
    first = receive(agent, 7)
    check_fa_ha(first)
    _t, _r, flags, home, hda, fda, revocation_id = struct.unpack_from("!BBHIIII", first)
    assert flags == 0xC000 and (home, hda, fda) == (
        int(IPv4Address(HOME)),
        int(IPv4Address(HA)),
        int(IPv4Address(FA)),
    )
    again = receive(agent, 7, timeout=3)
    assert again == first, "the retransmission is the same message"
    agent.sendto(fa_signed(struct.pack("!BBHII", 15, 0, 0, home, revocation_id)), (HA, 434))
    time.sleep(2.5)  # past the next retransmission time: nothing more comes
    agent.settimeout(0.1)
    with pytest.raises(TimeoutError):
        while True:
            data, _ = agent.recvfrom(2048)
            assert data[0] != 7, "retransmitted after the acknowledgement"
    stats = statistics(m, "rev")
    assert (stats["revocations-sent"], stats["revocation-acks-received"]) == ("1", "1")
    assert int(stats["revocations-retransmitted"]) >= 1 and stats["revocations-unacknowledged"] == "0"

    # The agent ends the visit: its revocation removes the binding and is acknowledged.
    agent.sendto(relayed_request(fa_timestamp=5000), (HA, 434))
    assert receive(agent, 3)[1] == 0
    assert len(bindings(m)) == 1
    revoke = struct.pack("!BBHIIII", 7, 0, 0, int(IPv4Address(HOME)), int(IPv4Address(HA)),
                         int(IPv4Address(FA)), 5001)  # fmt: skip
    agent.sendto(fa_signed(revoke), (HA, 434))
    ack = receive(agent, 15)
    check_fa_ha(ack)
    assert struct.unpack_from("!BBHII", ack) == (15, 0, 0, int(IPv4Address(HOME)), 5001)
    assert bindings(m) == []
    removed = notification(listener, "binding-removed")
    while removed.findtext(f"{{{NS}}}reason") == "cleared":
        removed = notification(listener, "binding-removed")
    assert removed.findtext(f"{{{NS}}}reason") == "revoked"
    # Replayed: discarded, not acknowledged again.
    agent.sendto(fa_signed(revoke), (HA, 434))
    deadline = time.monotonic() + 30
    while (stats := statistics(m, "rev"))["revocations-discarded"] == "0":
        assert time.monotonic() < deadline, stats
        time.sleep(0.1)
    assert stats["revocations-discarded"] == "1"

    stand_in.captured()


# --- an AAA Disconnect-Request (RFC 5176) of a binding relayed by the agent --------------------------

RADIUS_SECRET = "rev-radius-secret"
#: A subscriber of mipha/data/radius/users (Juniper ERX attributes): address, SPI and key from RADIUS.
AAA_NAI = "erx@example.net"
AAA_HOME = "10.77.0.10"
AAA_SPI = 300
AAA_KEY = b"erx-mn-ha-key-0123456789"


def aaa_vr_config(ha_ns: str) -> str:
    return f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<virtual-routers xmlns="{NS}"><virtual-router><name>rev</name><netns>{ha_ns}</netns>
  <home-agent><address>{HA}</address><authentication>local-then-aaa</authentication>
    <revocation><retransmit-interval>1</retransmit-interval><max-attempts>4</max-attempts></revocation>
  </home-agent>
  <aaa><server><address>127.0.0.1</address><secret>{RADIUS_SECRET}</secret></server>
    <lookup-password>lookup-pass</lookup-password></aaa>
  <foreign-agent><address>{FA}</address>
    <security-association><spi>{FA_SPI}</spi><key>{FA_KEY_YANG}</key></security-association></foreign-agent>
</virtual-router></virtual-routers></config>"""


def relayed_aaa_request(fa_timestamp: int, inform: bool) -> bytes:
    """An NAI registration (home address 0.0.0.0, RFC 2794) relayed by the agent with its offer."""
    ident = ((int(time.time()) + 2_208_988_800) << 32) | int.from_bytes(os.urandom(4), "big")
    fixed = struct.pack("!BBHIIIQ", 1, 0x02, 120, 0, int(IPv4Address(HA)), int(IPv4Address(FA)), ident)
    nai = struct.pack("!BB", 131, len(AAA_NAI)) + AAA_NAI.encode()
    covered = fixed + nai + struct.pack("!BBI", 32, 20, AAA_SPI)
    mn = covered + hmac.new(AAA_KEY, covered, hashlib.md5).digest()
    return fa_signed(mn + struct.pack("!BBHI", 137, 6, 0x8000 if inform else 0, fa_timestamp))


@pytest.fixture
def radiusd(namespaces: tuple[str, str], tmp_path: Path) -> Iterator[FreeRadius]:
    server = FreeRadius(tmp_path / "raddb", secret=RADIUS_SECRET, netns=namespaces[0])
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_aaa_disconnect_revokes_at_the_foreign_agent(radiusd: FreeRadius, stand_in: StandIn) -> None:
    agent, m, listener, ha_ns = stand_in.agent, stand_in.m, stand_in.listener, stand_in.ha_ns
    stand_in.configure(aaa_vr_config(ha_ns))

    # The key comes from FreeRADIUS (an Access-Request on loopback) before the reply.
    agent.sendto(relayed_aaa_request(fa_timestamp=2000, inform=True), (HA, 434))
    reply = receive(agent, 3, timeout=10)
    assert reply[1] == 0, f"code {reply[1]}"
    assert reply[4:8] == IPv4Address(AAA_HOME).packed
    check_fa_ha(reply)
    assert reply[-30:-26] == bytes((137, 6, 0x80, 0))  # negotiated, with I
    (binding,) = bindings(m)
    assert binding.findtext(f"{{{NS}}}home-address") == AAA_HOME

    done = subprocess.run(
        ["ip", "netns", "exec", ha_ns, "radclient", "-r", "1", "-t", "3", "127.0.0.1:3799",
         "disconnect", RADIUS_SECRET],
        input=f"User-Name = {AAA_NAI}\n", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "Disconnect-ACK" in done.stdout, done.stdout + done.stderr

    revocation = receive(agent, 7)
    check_fa_ha(revocation)
    _t, _r, flags, home, hda, fda, revocation_id = struct.unpack_from("!BBHIIII", revocation)
    assert flags == 0xC000  # A: the home agent revokes; I: please inform the node (negotiated)
    assert (home, hda, fda) == tuple(int(IPv4Address(a)) for a in (AAA_HOME, HA, FA))
    assert revocation_id > 2000  # §5: beyond the timestamp of our Revocation Support extension
    agent.sendto(fa_signed(struct.pack("!BBHII", 15, 0, 0x8000, home, revocation_id)), (HA, 434))
    removed = notification(listener, "binding-removed")
    assert removed.findtext(f"{{{NS}}}home-address") == AAA_HOME
    assert removed.findtext(f"{{{NS}}}reason") == "cleared"
    assert bindings(m) == []
    deadline = time.monotonic() + 30
    while (stats := statistics(m, "rev"))["revocation-acks-received"] != "1":
        assert time.monotonic() < deadline, stats
        time.sleep(0.1)
    assert stats["revocations-sent"] == "1" and stats["revocations-unacknowledged"] == "0"
    assert stats["revocations-received"] == "0" and stats["revocations-discarded"] == "0"

    rows = stand_in.captured("mip.rev.a", "mip.rev.i", "mip.ext.rev.i")
    rev_row = next(r for r in rows if r["mip.type"] == "7")
    assert (rev_row["mip.rev.a"], rev_row["mip.rev.i"]) == ("1", "1"), rev_row
    assert next(r for r in rows if r["mip.type"] == "3")["mip.ext.rev.i"] == "1", rows
