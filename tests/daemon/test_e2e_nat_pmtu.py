"""RFC 3519 tunnels and path MTU: DF copied to the outer header, ICMP fragmentation-needed to the sender.

The topology of ``test_e2e_nat`` (a mobile node behind a real nftables masquerade NAT, the daemon,
a correspondent on the home link), with the NAT's inside link narrowed to 1200 bytes: an outer
packet larger than that, with DF, is answered by the NAT with ICMP fragmentation-needed (translated
back by conntrack), from which the home agent's kernel learns the path MTU towards the NAT mapping.

For each backend (both carry UDP tunnels in userspace):

- pings with DF set and with DF clear cross the tunnel; tshark shows every tunnelled packet from the
  home agent with the outer DF equal to the inner DF (RFC 2003 §3.1, as for IP-in-IP);
- a DF ping too large for the narrow link: it is lost at the NAT, whose ICMP fragmentation-needed
  (about our outer packet, translated back by conntrack) the home agent relays to the correspondent
  with MTU 1200 - 32 = 1168 (RFC 2003 §4, RFC 1191): its route cache shows it after that one packet,
  and a DF ping of exactly 1168 bytes then goes through; once the correspondent forgot it, its next
  too-big DF packet is refused by the home agent's own kernel (EMSGSIZE, the path MTU it learnt from
  the same ICMP), which gets the same answer (``UdpTunnels.too_big``);
- a large ping without DF still goes through: the outer packet is fragmented.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_harness import Daemon
from free_ports import free_port
from mip_capture import Capture
from test_e2e_nat import HA, HOME, NAT_PUBLIC, NatTopology, bindings, endpoint, vr_config
from test_e2e_nat import topo as topo  # the fixture: one NAT topology per test, always removed

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

NARROW = 1200
UDP_OVERHEAD = 32  # outer IP + UDP + the tunnel data header


def ping(ns: str, target: str, size: int, df: bool, count: int = 2) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", ns, "ping", "-n", "-c", str(count), "-i", "0.3", "-W", "2",
           "-M", "do" if df else "dont", "-s", str(size), target]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def route_mtu(ns: str, target: str) -> int | None:
    out = subprocess.run(
        ["ip", "-n", ns, "route", "get", target], capture_output=True, text=True, check=True
    ).stdout
    words = out.split()
    return int(words[words.index("mtu") + 1]) if "mtu" in words else None


@pytest.mark.parametrize("backend", ["tun", "ipip"])
def test_df_is_copied_and_a_too_big_df_packet_gets_fragmentation_needed(
    topo: NatTopology, tmp_path: Path, backend: str
) -> None:
    n = topo.names
    subprocess.run(["ip", "-n", n["nat"], "link", "set", "in0", "mtu", str(NARROW)], check=True)
    subprocess.run(["ip", "-n", n["mn"], "link", "set", "mn0", "mtu", str(NARROW)], check=True)
    daemon = Daemon(tmp_path, free_port(), backend=backend)
    capture: Capture | None = None
    node: subprocess.Popen[str] | None = None
    try:
        daemon.start()
        with daemon.connect() as m:
            m.edit_config(target="running", config=vr_config(topo))
            capture = Capture(n["ha"], tmp_path / "pmtu.pcap", interface="wan0")
            node = endpoint(topo, 60, "--renew", "30", "--keepalive", "600")
            (b,) = bindings(m)
            assert (b["udp-tunnel"], b["nat-address"]) == ("true", NAT_PUBLIC)

            # Both DF settings fit the narrow link: they cross, each with its own DF outside.
            for df in (True, False):
                done = ping(n["cn"], HOME, 1000, df)
                assert done.returncode == 0, done.stdout + done.stderr

            # Too big with DF: one packet.  The NAT answers it with fragmentation-needed (MTU 1200),
            # which the home agent relays to the correspondent with MTU 1200 - 32 (RFC 2003 §4).
            big = NARROW  # an inner packet of 1228 bytes: 1260 outside
            assert route_mtu(n["cn"], HOME) is None
            ping(n["cn"], HOME, big, True, count=1)
            deadline = time.monotonic() + 10
            while route_mtu(n["cn"], HOME) != NARROW - UDP_OVERHEAD:
                assert time.monotonic() < deadline, (
                    f"no fragmentation-needed reached the correspondent: {route_mtu(n['cn'], HOME)}"
                )
                time.sleep(0.1)
            # The correspondent forgets: its next one reaches the home agent, whose kernel learnt the
            # path MTU from the same ICMP and refuses the DF send (EMSGSIZE): the same answer again.
            subprocess.run(["ip", "-n", n["cn"], "route", "flush", "cache"], check=True)
            assert route_mtu(n["cn"], HOME) is None
            assert ping(n["cn"], HOME, big, True, count=1).returncode != 0
            deadline = time.monotonic() + 10
            while route_mtu(n["cn"], HOME) != NARROW - UDP_OVERHEAD:
                assert time.monotonic() < deadline, "no fragmentation-needed for the EMSGSIZE case"
                time.sleep(0.1)
            fits = NARROW - UDP_OVERHEAD - 28  # ICMP payload: the inner packet is exactly 1168 bytes
            done = ping(n["cn"], HOME, fits, True)
            assert done.returncode == 0, done.stdout + done.stderr
            done = ping(n["cn"], HOME, big, False)  # no DF: the outer packet is fragmented
            assert done.returncode == 0, done.stdout + done.stderr

        node.send_signal(signal.SIGTERM)
        node.communicate(timeout=30)
        capture.wait_for({"1", "3", "4"})
        capture.stop()
        rows = capture.decode("ip.src", "ip.flags.df", "ip.len")
        assert all(r["_ws.malformed"] == "" for r in rows), [r for r in rows if r["_ws.malformed"]]
        tunnelled = [r for r in rows if r["mip.type"] == "4" and r["ip.src"].split(",")[0] == HA]
        df_pairs = {tuple(r["ip.flags.df"].split(",")) for r in tunnelled}
        assert ("1", "1") in df_pairs and ("0", "0") in df_pairs, df_pairs
        assert df_pairs <= {("1", "1"), ("0", "0")}, df_pairs  # outer DF = inner DF, always
        outer_lengths = {int(r["ip.len"].split(",")[0]) for r in tunnelled}
        assert NARROW in outer_lengths  # the 1168-byte DF ping, 1200 outside
    finally:
        if node is not None and node.poll() is None:
            node.kill()
            node.wait(timeout=10)
        if capture is not None:
            capture.stop()
        daemon.stop()
