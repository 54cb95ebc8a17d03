"""The daemon end to end with the kernel ``ipip`` backend; run inside User-Mode Linux by ``test_e2e_uml.py``.

This host's kernel has no ipip, so the flow of ``test_e2e_tun.py`` is repeated, smaller, on a Debian
kernel in UML (Python is ~7x slower there: one NETCONF session at a time, no notifications — the tun
test covers those):

configure over NETCONF → ``mipha mn register`` from the mobile node's namespace → the binding in <get>
names the ``mip-<CoA hex>`` device, which exists with the right ends, and the /32 route in table 434
points to it → a ping from the correspondent reaches the mobile node through the tunnel and comes back
through the reverse tunnel (tunnel counters in <get> and on the MN's device moved) → clear-bindings
removes binding, device, route and proxy entry → register again, ``kill -9`` the daemon, delete the
tunnel device so the restart has to rebuild it from the journal → restart: binding, device, route and
traffic are back → SIGTERM leaves no mipha object in the kernel.

The mobile node decapsulates with a kernel ``ipip`` device of its own (local CoA, remote HA address)
carrying the home address, and a host route to the correspondent through it (reverse tunnelling, T bit).

``python tests/daemon/e2e_uml_scenario.py`` prints one line per step and ``E2E UML PASSED (ipip)`` last;
exit status 0 = pass.  It needs root, the ``ipip`` and ``veth`` modules and a writable ``/tmp``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from lxml import etree
from ncclient import manager
from ncclient.transport import session as nc_session

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "dataplane"))
sys.path.insert(0, str(ROOT / "tests" / "daemon"))
sys.path.insert(0, str(ROOT / "tests"))

from daemon_harness import KEY_HEX, MIPHA, NS, config  # noqa: E402
from dataplane_scenario import (  # noqa: E402
    CN_ADDR,
    COA1,
    HA_ADDR,
    HOA,
    Failure,
    Topology,
    check,
    sh,
)
from free_ports import free_port  # noqa: E402

from ha.dataplane.ownership import MIPHA_TABLE, RTPROT_MIPHA, TUN_IFNAME, tunnel_ifname  # noqa: E402
from server.auth import hash_password  # noqa: E402

nc_session.TICK = 0.001  # ncclient's default adds ~100 ms per RPC (platform-notes)
PASSWORD = "e2e-uml-secret"
TUNNEL = tunnel_ifname(COA1)  # the device the ipip backend must create: mip-c000020a
MN_TUNNEL = "mnip0"
START_TIMEOUT = 180.0  # a start under QEMU TCG on a loaded 2-core box: a restart also starts the VR (~15 s)
KERNEL_WAIT = 30.0  # upper bound for the asynchronous data plane apply on a loaded machine


def log(message: str) -> None:
    print(message, flush=True)


class Daemon:
    """``mipha run --dataplane ipip`` as a child process; ends only the process it started, by PID."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.config = tmp / "mipha.toml"
        self.log_path = tmp / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # No [dataplane] section: the backend comes from --dataplane, the flag under test.
        self.config.write_text(
            f"""
[netconf]
listen = "127.0.0.1:{self.port}"
[[user]]
name = "admin"
password-hash = "{hash_password(PASSWORD, n_log2=10)}"
groups = ["admin"]
[state]
dir = "{tmp / "state"}"
"""
        )

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [MIPHA, "run", "--config", str(self.config), "--dataplane", "ipip", "--log-level", "info"],
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            check(self.proc.poll() is None, f"the daemon exited at start:\n{self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise Failure(f"the daemon did not listen within {START_TIMEOUT} s:\n{self.log_path.read_text()}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM (graceful stop, kernel objects removed), SIGKILL if it hangs; the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise Failure("the daemon did not stop within 30 s of SIGTERM") from None

    def connect(self) -> manager.Manager:
        return manager.connect(
            host="127.0.0.1",
            port=self.port,
            username="admin",
            password=PASSWORD,
            hostkey_verify=False,
            allow_agent=False,
            look_for_keys=False,
            timeout=60,
        )


def mobile_node_tunnel(topo: Topology) -> None:
    """The MN's own decapsulator: a kernel ipip device from the CoA to the HA carrying the home address."""
    mn = topo.mn
    sh(f"ip -n {mn} link add {MN_TUNNEL} type ipip local {COA1} remote {HA_ADDR}")
    sh(f"ip -n {mn} addr add {HOA}/32 dev {MN_TUNNEL}")
    sh(f"ip -n {mn} link set {MN_TUNNEL} up")
    sh(f"ip -n {mn} route add {CN_ADDR}/32 dev {MN_TUNNEL} src {HOA}")  # replies go back reverse-tunnelled


def register(topo: Topology) -> dict:
    out = subprocess.run(
        ["ip", "netns", "exec", topo.mn, MIPHA, "mn", "--ha", str(HA_ADDR), "--spi", "256", "--key", KEY_HEX,
         "--flags", "T", "--timeout", "2", "--json", "register", "--home", str(HOA), "--coa", str(COA1)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    check(out.returncode == 0, f"mipha mn register failed:\n{out.stdout}{out.stderr}")
    reply = json.loads(out.stdout)
    step = reply["steps"][0]
    check(reply["ok"] and step["code"] == 0 and step["authenticated"], f"registration refused: {reply}")
    return reply


def home_agent_state(m: manager.Manager) -> etree._Element:
    flt = (
        f'<virtual-routers xmlns="{NS}"><virtual-router><name>e2e</name>'
        "<home-agent><bindings/><tunnels/></home-agent></virtual-router></virtual-routers>"
    )
    return etree.fromstring(m.get(filter=("subtree", flt)).data_xml.encode())


def fields(element: etree._Element) -> dict[str, str | None]:
    return {etree.QName(c).localname: c.text for c in element}


def bindings(state: etree._Element) -> list[dict[str, str | None]]:
    return [fields(b) for b in state.iter(f"{{{NS}}}binding")]


def tunnels(state: etree._Element) -> list[dict[str, str | None]]:
    return [fields(t) for t in state.iter(f"{{{NS}}}tunnel")]


def only(entries: list[dict[str, str | None]], what: str) -> dict[str, str | None]:
    """The single entry of a list read over NETCONF (a readable failure otherwise)."""
    check(len(entries) == 1, f"{what}: expected exactly one entry in <get>, got {entries}")
    return entries[0]


def ping(topo: Topology, count: int = 3) -> int:
    """Echo requests from the correspondent to the home address: how many replies came back."""
    res = subprocess.run(
        ["ip", "netns", "exec", topo.cn, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", str(HOA)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    match = re.search(r"(\d+) received", res.stdout)
    check(match is not None, f"unexpected ping output:\n{res.stdout}{res.stderr}")
    assert match is not None
    return int(match.group(1))


def link_info(ns: str, ifname: str) -> dict | None:
    """``ip -d -j link show`` of one device, or None when it does not exist."""
    res = subprocess.run(
        ["ip", "-n", ns, "-d", "-s", "-j", "link", "show", "dev", ifname],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return json.loads(res.stdout)[0] if res.returncode == 0 else None


def mipha_objects(ns: str) -> dict[str, list[str]]:
    """What mipha has in the HA namespace, by kind (``kernel_objects`` of the dataplane tests, except
    that Linux 6.1, the UML kernel, refuses to dump a routing table never created: no mipha route)."""
    links = [
        link["ifname"]
        for link in json.loads(sh(f"ip -n {ns} -j link show"))
        if link["ifname"].startswith(("mip-", "mig-")) and link["ifname"] != TUN_IFNAME
    ]
    res = subprocess.run(
        ["ip", "-n", ns, "route", "show", "table", str(MIPHA_TABLE), "proto", str(RTPROT_MIPHA)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    check(
        res.returncode == 0 or "FIB table does not exist" in res.stderr,
        f"cannot list table {MIPHA_TABLE}: {res.stderr}",
    )
    return {
        "links": links,
        "routes": res.stdout.splitlines(),
        "rules": [r for r in sh(f"ip -n {ns} rule").splitlines() if f"proto {RTPROT_MIPHA}" in r],
        "proxies": [
            p for p in sh(f"ip -n {ns} neigh show proxy").splitlines() if f"proto {RTPROT_MIPHA}" in p
        ],
    }


def home_routes(ns: str) -> list[tuple[str | None, str | None]]:
    """(destination, device) of the routes for the home address in mipha's table (none before any)."""
    res = subprocess.run(
        ["ip", "-n", ns, "-j", "route", "show", "table", str(MIPHA_TABLE), f"{HOA}/32"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if res.returncode != 0:
        check("FIB table does not exist" in res.stderr, f"cannot list table {MIPHA_TABLE}: {res.stderr}")
        return []
    return [(r.get("dst"), r.get("dev")) for r in json.loads(res.stdout or "[]")]


def has_proxy_entry(ns: str) -> bool:
    return any(p.split()[0] == str(HOA) for p in mipha_objects(ns)["proxies"])


def wait_kernel_programmed(topo: Topology) -> None:
    """Poll until the binding's device, route and proxy entry exist.

    The daemon journals a binding before replying, but hands the data plane its intents asynchronously
    (``VirtualRouter.flush``): a registration reply does not mean the kernel is programmed yet.
    """
    deadline = time.monotonic() + KERNEL_WAIT
    while not (
        link_info(topo.ha, TUNNEL) is not None
        and home_routes(topo.ha) == [(str(HOA), TUNNEL)]
        and has_proxy_entry(topo.ha)
    ):
        check(
            time.monotonic() < deadline,
            f"binding accepted but its kernel state not programmed within {KERNEL_WAIT} s: "
            f"{mipha_objects(topo.ha)}",
        )
        time.sleep(0.05)


def check_kernel_binding(topo: Topology) -> None:
    """The binding's kernel state: the ipip device to the CoA, the /32 route into it, the proxy entry."""
    dev = link_info(topo.ha, TUNNEL)
    check(dev is not None, f"no ipip device {TUNNEL} in the HA namespace")
    assert dev is not None
    info = dev.get("linkinfo", {})
    check(info.get("info_kind") == "ipip", f"{TUNNEL} is not an ipip device: {info}")
    ends = (info.get("info_data", {}).get("local"), info.get("info_data", {}).get("remote"))
    check(ends == (str(HA_ADDR), str(COA1)), f"{TUNNEL} runs {ends}, not HA -> CoA")
    check("UP" in dev.get("flags", []), f"{TUNNEL} is not up: {dev.get('flags')}")
    routes = home_routes(topo.ha)
    check(routes == [(str(HOA), TUNNEL)], f"table {MIPHA_TABLE} routes for {HOA}: {routes}")
    check(has_proxy_entry(topo.ha), f"no proxy ARP entry for {HOA}: {mipha_objects(topo.ha)}")


def check_kernel_clean(topo: Topology, *, rules: bool = False) -> None:
    objects = mipha_objects(topo.ha)
    kinds = ("links", "routes", "proxies", "rules") if rules else ("links", "routes", "proxies")
    check(all(objects[k] == [] for k in kinds), f"mipha objects left in the kernel: {objects}")


def mn_rx_packets(topo: Topology) -> int:
    dev = link_info(topo.mn, MN_TUNNEL)
    assert dev is not None
    return int(dev["stats64"]["rx"]["packets"])


def run(topo: Topology, daemon: Daemon) -> None:
    mobile_node_tunnel(topo)
    daemon.start()
    log("daemon started with --dataplane ipip")
    with daemon.connect() as m:
        m.edit_config(target="running", config=config(topo.ha))
        check(ping(topo, 1) == 0, "no binding yet: nothing may intercept the home address")
        check_kernel_clean(topo)
        log("configured over NETCONF; nothing intercepted before registration")

        register(topo)
        state = home_agent_state(m)
        b = only(bindings(state), "after registration")
        check(b["home-address"] == str(HOA) and b["care-of-address"] == str(COA1), f"binding {b}")
        check(b["mobile-node"] == "mn1" and b["source-address"] == str(COA1), f"binding {b}")
        check(b["lifetime-granted"] == "600" and 0 < int(b["lifetime-remaining"] or 0) <= 600, f"binding {b}")
        check(b["flags"] == "T" and b["encapsulation"] == "ip-in-ip", f"binding {b}")
        check(b["tunnel-interface"] == TUNNEL, f"binding names {b['tunnel-interface']}, not {TUNNEL}")
        wait_kernel_programmed(topo)
        check_kernel_binding(topo)
        log(f"registered: binding in <get>, {TUNNEL} up, /32 route in table {MIPHA_TABLE}, proxy ARP")

        before = mn_rx_packets(topo)
        replies = ping(topo)
        check(replies > 0, "the correspondent's ping did not go through the tunnel and back")
        check(
            mn_rx_packets(topo) - before >= replies,
            "the echo requests did not arrive on the MN's ipip device",
        )
        t = only(tunnels(home_agent_state(m)), "tunnels after the ping")
        check(t["care-of-address"] == str(COA1) and t["interface"] == TUNNEL, f"tunnel {t}")
        check(t["binding-count"] == "1", f"tunnel {t}")
        check(
            int(t["out-packets"] or 0) >= replies and int(t["in-packets"] or 0) >= replies,
            f"tunnel counters {t} after {replies} echo replies",
        )
        log("ping through the ipip tunnel and back through the reverse tunnel; counters in <get>")

        rpc = etree.fromstring(
            f'<clear-bindings xmlns="{NS}"><virtual-router>e2e</virtual-router></clear-bindings>'
        )
        cleared = etree.fromstring(m.dispatch(rpc).xml.encode())
        check(cleared.findtext(f".//{{{NS}}}cleared") == "1", "clear-bindings did not report 1 binding")
        state = home_agent_state(m)
        check(bindings(state) == [] and tunnels(state) == [], "binding or tunnel left in <get> after clear")
        check_kernel_clean(topo)
        check(ping(topo, 1) == 0, "cleared: the home address is still intercepted")
        log("clear-bindings: binding, device, route and proxy entry gone")

        register(topo)
        check(len(bindings(home_agent_state(m))) == 1, "re-registration did not create a binding")
        wait_kernel_programmed(topo)
    daemon.kill9()
    # The kernel keeps the device after kill -9 and a restart would simply adopt it; delete it (and with
    # it the route) so that only the journal can bring the binding's kernel state back.
    sh(f"ip -n {topo.ha} link del {TUNNEL}")
    check(link_info(topo.ha, TUNNEL) is None, f"{TUNNEL} still there")
    log("registered again, daemon killed with SIGKILL, tunnel device deleted")

    daemon.start()
    with daemon.connect() as m:
        b = only(bindings(home_agent_state(m)), "after kill -9 and restart")
        check(b["home-address"] == str(HOA) and b["care-of-address"] == str(COA1), f"binding {b}")
        check(0 < int(b["lifetime-remaining"] or 0) <= 600, f"restored lifetime: {b}")
        check(b["tunnel-interface"] == TUNNEL, f"binding names {b['tunnel-interface']}, not {TUNNEL}")
    check_kernel_binding(topo)
    check(ping(topo) > 0, "after kill -9 and restart the binding does not forward")
    log("restarted: binding, device, route and traffic are back")

    status = daemon.stop()
    check(status == 0, f"the daemon exited with {status} on SIGTERM")
    check_kernel_clean(topo, rules=True)
    log("SIGTERM: daemon stopped, no mipha object left in the kernel")


def main() -> int:
    topo = Topology()
    tmp = Path(tempfile.mkdtemp(prefix="mipha-e2e-uml-"))
    daemon: Daemon | None = None
    try:
        topo.create()
        daemon = Daemon(tmp)
        run(topo, daemon)
    except Exception as exc:  # any broken step (Failure, an rpc-error, a timeout) fails the run
        if not isinstance(exc, Failure):
            traceback.print_exc(file=sys.stdout)
        log(f"E2E UML FAILED (ipip): {exc}")
        if daemon is not None and daemon.log_path.exists():
            log("--- daemon log ---\n" + daemon.log_path.read_text()[-6000:])
        return 1
    finally:
        if daemon is not None and daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(timeout=10)
        topo.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    log("E2E UML PASSED (ipip)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
