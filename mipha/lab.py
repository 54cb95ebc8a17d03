"""``mipha lab up | demo | down``: the whole feature on one machine, in network namespaces.

Topology (the names carry a prefix, ``mipha-lab`` by default)::

    mipha-lab-cn                mipha-lab-ha                         mipha-lab-mn
    correspondent ──home link── home agent (VR "lab") ──transit───── mobile node
    cn0 192.0.2.2/24      home0 192.0.2.1/24    tr0 198.51.100.1/24   mn0 198.51.100.7/24 (CoA)
                                                                       mnt0 192.0.2.10/32 (home address)

``up`` builds the namespaces and starts ``mipha run`` (in the root namespace; its virtual router
lives in ``mipha-lab-ha``) with NETCONF on 127.0.0.1:8830 and its own state directory.  ``demo``
starts the mobile node's userspace tunnel endpoint (:mod:`ha.mn.tunnel`), registers the node with
``mipha mn`` from its namespace, pings the home address from the correspondent, reads the binding
over NETCONF and shows what the home agent put in the kernel.  ``down`` stops both processes by PID
and deletes exactly the namespaces ``up`` created.

AAA (``docs/aaa.md``): without ``--nat``, ``up`` also starts FreeRADIUS 3.2 in ``mipha-lab-ha`` on
127.0.0.1 (configuration generated into ``<lab dir>/radius/`` from :mod:`mipha.radiusd`'s template,
one subscriber appended: ``lab-aaa@example.net``, home address 192.0.2.20, an ERX key) and configures
the virtual router ``local-then-aaa`` with that server.  ``demo`` then registers that node too (it has
no ``mobile-node`` entry: its key and address come from the Access-Accept), pings 192.0.2.20 through
its tunnel (a second endpoint, TUN ``mnt1``) and shows FreeRADIUS's accounting Start record.

``up --nat`` / ``demo --nat`` put a NAT between the home agent and the mobile node (RFC 3519)::

    mipha-lab-ha ──tr0 198.51.100.1/24══out0 198.51.100.2/24── mipha-lab-nat ──in0 172.16.0.1/24══
        mn0 172.16.0.7/24 (private CoA) ── mipha-lab-mn

``mipha-lab-nat`` masquerades with nftables (``masquerade random`` on ``out0``); the home agent has no
route to 172.16.0.0/24.  ``demo --nat`` starts :mod:`ha.mn.udp_tunnel` in the mobile node's namespace
(it registers with a UDP Tunnel Request and carries the node's side of the UDP tunnel), pings the home
address through the NAT and shows the binding's NAT mapping and the NAT's conntrack entry.

Everything the lab owns is recorded in its directory (``/run/mipha-lab/<prefix>/``): ``lab.json``
(the namespaces it created), ``daemon.pid``/``daemon.log``, ``tunnel.pid``/``tunnel.log``,
``radius.pid``/``radius.log`` and ``radius/``, ``aaa-tunnel.pid``/``aaa-tunnel.log`` and the daemon's
``state/``.  A namespace with a lab name that is not recorded there is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from lxml import etree

from ha.dataplane.checksum import internet_checksum
from ha.netns import NetnsThread, netns_exists

from . import radiusd

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "lab"
RUN_DIR = Path("/run/mipha-lab")
NS = "urn:mipha:yang:mipha-home-agent"
VR_NAME = "lab"

CN_ADDR = IPv4Address("192.0.2.2")
HA_ADDR = IPv4Address("192.0.2.1")
HA_TRANSIT = IPv4Address("198.51.100.1")
HOME_ADDR = IPv4Address("192.0.2.10")
COA = IPv4Address("198.51.100.7")
NAT_PUBLIC = IPv4Address("198.51.100.2")
NAT_INSIDE = IPv4Address("172.16.0.1")
PRIVATE_COA = IPv4Address("172.16.0.7")
NFT_RULESET = """table ip mipha_lab_nat {
 chain postrouting {
  type nat hook postrouting priority srcnat; policy accept;
  oifname "out0" masquerade random
 }
}
"""
SPI = 256
KEY_HEX = b"mipha-lab-key-01".hex()  # the key of examples/lab/startup.xml
# The AAA-authenticated node: only FreeRADIUS knows it (mipha/data/radius + the entry below).
AAA_NAI = "lab-aaa@example.net"
AAA_HOME = IPv4Address("192.0.2.20")
AAA_SPI = 300
AAA_KEY = b"mipha-lab-aaa-key-0123"  # a lab key: never reuse it
RADIUS_SECRET = "mipha-lab-radius"  # a lab secret
LOOKUP_PASSWORD = "lookup-pass"  # the template's lookup password
AAA_USER = f"""
# mipha lab: the AAA-authenticated node (no mobile-node entry in the home agent's configuration).
{AAA_NAI}\tCleartext-Password := "{LOOKUP_PASSWORD}"
\tFramed-IP-Address = {AAA_HOME},
\tERX-Mobile-IP-SPI = {AAA_SPI},
\tERX-Mobile-IP-Key = "{AAA_KEY.decode()}",
\tERX-Mobile-IP-Lifetime = 3600
"""
RADIUS_READY_TIMEOUT = 20.0
MIPHA_TABLE = 434  # ha.dataplane.ownership.MIPHA_TABLE (not imported: keeps `mipha lab` light)

DAEMON_READY_TIMEOUT = 60.0
TUNNEL_READY_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


class LabError(Exception):
    """A lab step failed; the message says which one (the caller adds how to clean up)."""


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def detail(text: str) -> None:
    for line in text.rstrip("\n").splitlines():
        print(f"    {line}", flush=True)


def run(cmd: list[str], *, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """One command; on failure raise with its stderr (``check``) or return the result."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if check and proc.returncode:
        raise LabError(f"`{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()}")
    if not quiet and proc.stdout.strip():
        detail(proc.stdout)
    return proc


@dataclass(frozen=True)
class Lab:
    """Names, ports and files of one lab instance."""

    prefix: str = "mipha-lab"
    port: int = 8830
    dataplane: str = "auto"
    directory: Path | None = None
    nat: bool = False  # RFC 3519: a masquerading NAT namespace between the home agent and the node

    @property
    def dir(self) -> Path:
        return self.directory or RUN_DIR / self.prefix

    @property
    def cn(self) -> str:
        return f"{self.prefix}-cn"

    @property
    def ha(self) -> str:
        return f"{self.prefix}-ha"

    @property
    def mn(self) -> str:
        return f"{self.prefix}-mn"

    @property
    def nat_ns(self) -> str:
        return f"{self.prefix}-nat"

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.cn, self.ha, self.nat_ns, self.mn) if self.nat else (self.cn, self.ha, self.mn)

    @property
    def record(self) -> Path:
        return self.dir / "lab.json"

    def pidfile(self, what: str) -> Path:
        return self.dir / f"{what}.pid"

    def logfile(self, what: str) -> Path:
        return self.dir / f"{what}.log"

    def cleanup_hint(self) -> str:
        extra = "" if self.prefix == "mipha-lab" else f" --prefix {self.prefix}"
        return f"clean up with: mipha lab down{extra}"

    # -- what the lab owns ---------------------------------------------------------------------------

    def owned(self) -> list[str]:
        """Namespaces this lab created (from its record)."""
        try:
            return list(json.loads(self.record.read_text())["namespaces"])
        except (FileNotFoundError, ValueError, KeyError):
            return []

    def recorded_nat(self) -> bool | None:
        """Whether the lab that is up has the NAT (None: no lab recorded)."""
        try:
            return bool(json.loads(self.record.read_text())["nat"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def recorded_port(self) -> int | None:
        """The NETCONF port of a lab that is up (so ``demo`` finds the daemon ``up`` started)."""
        try:
            return int(json.loads(self.record.read_text())["port"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def remember(self, names: list[str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"namespaces": names, "port": self.port, "nat": self.nat}) + "\n")
        tmp.replace(self.record)


# -- processes by PID -----------------------------------------------------------------------------------


def _pid_alive(pid: int, marker: str) -> bool:
    """True when ``pid`` runs and its command line contains ``marker`` (a recycled PID is not ours)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return marker in cmdline and state != "Z"


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def running(lab: Lab, what: str, marker: str) -> int | None:
    pid = read_pid(lab.pidfile(what))
    return pid if pid is not None and _pid_alive(pid, marker) else None


def stop_process(lab: Lab, what: str, marker: str) -> None:
    """SIGTERM the process of ``what.pid`` (if it is still ours), wait, SIGKILL as a last resort."""
    pidfile = lab.pidfile(what)
    pid = read_pid(pidfile)
    if pid is None:
        return
    if not _pid_alive(pid, marker):
        step(f"{what} (pid {pid}) is not running")
        pidfile.unlink(missing_ok=True)
        return
    step(f"stopping the {what} (pid {pid}, SIGTERM)")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _pid_alive(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(pid, marker):
        step(f"{what} (pid {pid}) did not stop within {STOP_TIMEOUT:.0f} s: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)


def spawn(lab: Lab, what: str, cmd: list[str]) -> subprocess.Popen[bytes]:
    """Start a background process of the lab (own session, output to its log file, PID recorded)."""
    log = lab.logfile(what).open("ab")
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        log.close()
    lab.pidfile(what).write_text(f"{proc.pid}\n")
    return proc


def wait_for_log(
    lab: Lab, what: str, proc: subprocess.Popen[bytes], needle: str, timeout: float, offset: int = 0
) -> None:
    """Poll ``what.log`` until ``needle`` appears; fail if the process exits or time runs out."""
    log = lab.logfile(what)
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")[offset:]
        if needle in text:
            return
        if proc.poll() is not None:
            raise LabError(f"the {what} exited with status {proc.returncode}; its log:\n{_tail(text)}")
        if time.monotonic() > deadline:
            raise LabError(f"the {what} did not get ready within {timeout:.0f} s; its log:\n{_tail(text)}")
        time.sleep(0.05)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:]) or "    (empty)"


# -- up -------------------------------------------------------------------------------------------------


def _topology_commands(lab: Lab) -> list[tuple[str, list[list[str]]]]:
    if lab.nat:
        return _nat_topology_commands(lab)
    cn, ha, mn = lab.namespaces
    nx = ["ip", "netns", "exec"]
    commands: list[tuple[str, list[list[str]]]] = [
        (
            "home link: cn0 (correspondent) <-> home0 (home agent)",
            [["ip", "-n", cn, "link", "add", "cn0", "type", "veth", "peer", "name", "home0", "netns", ha]],
        ),
        (
            "transit: tr0 (home agent) <-> mn0 (mobile node)",
            [["ip", "-n", ha, "link", "add", "tr0", "type", "veth", "peer", "name", "mn0", "netns", mn]],
        ),
    ]
    addresses = (
        (cn, "cn0", f"{CN_ADDR}/24"),
        (ha, "home0", f"{HA_ADDR}/24"),
        (ha, "tr0", f"{HA_TRANSIT}/24"),
        (mn, "mn0", f"{COA}/24"),
    )
    commands += _address_commands(addresses)
    cn_default = ["ip", "-n", cn, "route", "add", "default", "via", str(HA_ADDR)]
    commands += [
        (f"{cn}: default route via the home agent {HA_ADDR}", [cn_default]),
        (
            f"{mn}: default route via {HA_TRANSIT} (the mobile node is away from home)",
            [["ip", "-n", mn, "route", "add", "default", "via", str(HA_TRANSIT)]],
        ),
        (f"{ha}: IPv4 forwarding on", [[*nx, ha, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]]),
    ]  # fmt: skip
    return commands


def _address_commands(addresses: tuple[tuple[str, str, str], ...]) -> list[tuple[str, list[list[str]]]]:
    nx = ["ip", "netns", "exec"]
    return [
        (
            f"{ns}: {dev} {addr}, up, checksum/segmentation offloads off",
            [
                ["ip", "-n", ns, "addr", "add", addr, "dev", dev],
                # veth hands partially-checksummed packets across namespaces; a userspace tunnel
                # endpoint would forward them with wrong inner checksums (platform notes)
                [*nx, ns, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off"],
                ["ip", "-n", ns, "link", "set", dev, "up"],
            ],
        )
        for ns, dev, addr in addresses
    ]


def _nat_topology_commands(lab: Lab) -> list[tuple[str, list[list[str]]]]:
    """cn -- ha -- nat (nftables masquerade) -- mn: the mobile node has a private care-of address."""
    cn, ha, nat, mn = lab.namespaces
    nx = ["ip", "netns", "exec"]
    commands: list[tuple[str, list[list[str]]]] = [
        (
            "home link: cn0 (correspondent) <-> home0 (home agent)",
            [["ip", "-n", cn, "link", "add", "cn0", "type", "veth", "peer", "name", "home0", "netns", ha]],
        ),
        (
            "transit: tr0 (home agent) <-> out0 (the NAT's public side)",
            [["ip", "-n", ha, "link", "add", "tr0", "type", "veth", "peer", "name", "out0", "netns", nat]],
        ),
        (
            "private link: in0 (the NAT's inside) <-> mn0 (mobile node)",
            [["ip", "-n", nat, "link", "add", "in0", "type", "veth", "peer", "name", "mn0", "netns", mn]],
        ),
    ]
    commands += _address_commands(
        (
            (cn, "cn0", f"{CN_ADDR}/24"),
            (ha, "home0", f"{HA_ADDR}/24"),
            (ha, "tr0", f"{HA_TRANSIT}/24"),
            (nat, "out0", f"{NAT_PUBLIC}/24"),
            (nat, "in0", f"{NAT_INSIDE}/24"),
            (mn, "mn0", f"{PRIVATE_COA}/24"),
        )
    )
    commands += [
        (f"{cn}: default route via the home agent {HA_ADDR}",
         [["ip", "-n", cn, "route", "add", "default", "via", str(HA_ADDR)]]),
        (f"{nat}: default route via {HA_TRANSIT}, IPv4 forwarding on",
         [["ip", "-n", nat, "route", "add", "default", "via", str(HA_TRANSIT)],
          [*nx, nat, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]]),
        (f"{nat}: nftables masquerade (random ports) of everything leaving out0",
         [[*nx, nat, "nft", "-f", str(lab.dir / "nat.nft")]]),
        (f"{mn}: default route via the NAT {NAT_INSIDE} (the mobile node is behind a NAT)",
         [["ip", "-n", mn, "route", "add", "default", "via", str(NAT_INSIDE)]]),
        (f"{ha}: IPv4 forwarding on; no route to 172.16.0.0/24 (only the UDP tunnel reaches the node)",
         [[*nx, ha, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]]),
    ]  # fmt: skip
    return commands


def _startup_xml(lab: Lab) -> Path:
    """The lab's startup document with this lab's HA namespace name in ``<netns>``."""
    tree = etree.parse(str(EXAMPLES / "startup.xml"))
    found = tree.findall(f".//{{{NS}}}virtual-router/{{{NS}}}netns")
    if len(found) != 1:
        raise LabError(f"{EXAMPLES / 'startup.xml'}: expected exactly one <netns> element")
    found[0].text = lab.ha
    if lab.nat:  # the node registers from its private address, behind the NAT
        for access in tree.findall(f".//{{{NS}}}home-agent/{{{NS}}}care-of-access"):
            extra = etree.Element(f"{{{NS}}}care-of-access")
            extra.text = f"{PRIVATE_COA.exploded.rsplit('.', 1)[0]}.0/24"
            access.addnext(extra)
            break
    elif radiusd.available():
        _add_aaa(tree)
    out = lab.dir / "startup.xml"
    tree.write(str(out), xml_declaration=True, encoding="UTF-8")
    return out


def _add_aaa(tree: etree._ElementTree) -> None:
    """``local-then-aaa`` with the lab's FreeRADIUS (127.0.0.1 in the home agent's namespace)."""
    q = f"{{{NS}}}"
    vr = tree.find(f".//{q}virtual-router")
    home_agent = vr.find(f"{q}home-agent") if vr is not None else None
    if vr is None or home_agent is None:
        raise LabError(f"{EXAMPLES / 'startup.xml'}: expected a virtual-router with a home-agent")
    etree.SubElement(home_agent, f"{q}authentication").text = "local-then-aaa"
    aaa = etree.SubElement(vr, f"{q}aaa")
    server = etree.SubElement(aaa, f"{q}server")
    etree.SubElement(server, f"{q}address").text = "127.0.0.1"
    etree.SubElement(server, f"{q}secret").text = RADIUS_SECRET
    etree.SubElement(aaa, f"{q}lookup-password").text = LOOKUP_PASSWORD


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_names(lab: Lab) -> list[str]:
    """The namespaces this lab owns; refuse when a lab-named namespace is someone else's."""
    owned = lab.owned()
    foreign = [ns for ns in lab.namespaces if netns_exists(ns) and ns not in owned]
    if foreign:
        raise LabError(
            f"namespace(s) {', '.join(foreign)} exist but were not created by `mipha lab` "
            f"(no record in {lab.record}); they are left alone. Remove them yourself "
            f"(ip netns del NAME) or choose another --prefix"
        )
    return owned


def build_topology(lab: Lab) -> None:
    """Namespaces, veths, addresses, routes, forwarding; each namespace is recorded as it is created."""
    lab.dir.mkdir(parents=True, exist_ok=True)
    if lab.nat:
        (lab.dir / "nat.nft").write_text(NFT_RULESET)
    created: list[str] = []
    for ns in lab.namespaces:
        step(f"creating network namespace {ns}")
        run(["ip", "netns", "add", ns])
        created.append(ns)
        lab.remember(created)
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
    for what, cmds in _topology_commands(lab):
        step(what)
        for cmd in cmds:
            run(cmd, quiet=True)


def delete_topology(lab: Lab) -> None:
    """Delete the namespaces this lab recorded (and only those)."""
    for ns in lab.owned():
        if netns_exists(ns):
            step(f"deleting network namespace {ns}")
            run(["ip", "netns", "del", ns])


def up(lab: Lab) -> None:
    if os.geteuid() != 0:
        raise LabError("the lab creates network namespaces: run it as root")
    recorded = lab.recorded_nat()
    if recorded is not None and recorded != lab.nat:
        have = "with" if recorded else "without"
        raise LabError(f"the lab is up {have} the NAT: run `mipha lab down` first, or match --nat")
    for path in (EXAMPLES / "mipha-lab.toml", EXAMPLES / "startup.xml"):
        if not path.exists():
            raise LabError(f"{path} is missing (the lab runs from a mipha source checkout)")
    if check_names(lab):
        missing = [ns for ns in lab.namespaces if not netns_exists(ns)]
        if missing:
            raise LabError(f"the lab is half built (missing {', '.join(missing)})")
        pid = running(lab, "daemon", "mipha.cli")
        if pid is not None:
            step(f"the lab is already up ({', '.join(lab.namespaces)}; daemon pid {pid})")
            return
        step("the lab's namespaces exist but its daemon is not running: starting it")
        _start_radius(lab)
        _start_daemon(lab)
        return
    _check_port(lab)  # before building anything
    build_topology(lab)
    _start_radius(lab)
    _start_daemon(lab)


def _check_port(lab: Lab) -> None:
    if not _port_free(lab.port):
        raise LabError(f"TCP port 127.0.0.1:{lab.port} is in use: stop what uses it or pass --port")


def _start_radius(lab: Lab) -> None:
    """FreeRADIUS on 127.0.0.1 in the home agent's namespace (not with ``--nat``; skipped, and said so,
    where it is not installed)."""
    if lab.nat:
        return
    if not radiusd.available():
        step("FreeRADIUS is not installed (apt install freeradius): the lab has no AAA-authenticated node")
        return
    pid = running(lab, "radius", radiusd.BINARY)
    if pid is not None:
        step(f"FreeRADIUS already running (pid {pid})")
        return
    directory = lab.dir / "radius"
    radiusd.prepare(directory, AAA_USER)
    step(
        f"starting FreeRADIUS in {lab.ha} on 127.0.0.1:1812/1813 (configuration {directory}, from "
        f"{radiusd.TEMPLATE}; subscriber {AAA_NAI} -> {AAA_HOME}, ERX SPI {AAA_SPI})"
    )
    offset = lab.logfile("radius").stat().st_size if lab.logfile("radius").exists() else 0
    log = lab.logfile("radius").open("ab")
    try:
        proc = subprocess.Popen(
            radiusd.command(directory, lab.ha),
            env=radiusd.environment(directory, RADIUS_SECRET),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()
    lab.pidfile("radius").write_text(f"{proc.pid}\n")
    wait_for_log(lab, "radius", proc, radiusd.READY, RADIUS_READY_TIMEOUT, offset)
    detail(f"FreeRADIUS running (pid {proc.pid}), log {lab.logfile('radius')}")


def _start_daemon(lab: Lab) -> None:
    _check_port(lab)
    state = lab.dir / "state"
    startup = _startup_xml(lab)
    cmd = [
        sys.executable, "-m", "mipha.cli", "run",
        "--config", str(EXAMPLES / "mipha-lab.toml"),
        "--listen", f"127.0.0.1:{lab.port}",
        "--state-dir", str(state),
        "--startup", str(startup),
        "--dataplane", lab.dataplane,
    ]  # fmt: skip
    step(
        f"starting the daemon: mipha run --config {EXAMPLES / 'mipha-lab.toml'} --listen 127.0.0.1:{lab.port}"
    )
    detail(f"state {state}, startup {startup}, data plane {lab.dataplane}, log {lab.logfile('daemon')}")
    offset = lab.logfile("daemon").stat().st_size if lab.logfile("daemon").exists() else 0
    proc = spawn(lab, "daemon", cmd)
    wait_for_log(lab, "daemon", proc, "mipha running", DAEMON_READY_TIMEOUT, offset)
    text = lab.logfile("daemon").read_text(errors="replace")[offset:]
    if f"virtual router {VR_NAME}: home agent" not in text:
        raise LabError(
            f"the daemon runs but virtual router {VR_NAME!r} did not start; its log:\n{_tail(text)}"
        )
    step(f"daemon running (pid {proc.pid}); NETCONF on 127.0.0.1:{lab.port}, user admin / password admin")
    for line in text.splitlines():
        if "virtual router" in line or "mipha running" in line:
            detail(line)


# -- demo -----------------------------------------------------------------------------------------------


def start_tunnel(lab: Lab, what: str = "tunnel", home: IPv4Address = HOME_ADDR, index: int = 0) -> None:
    """A mobile node's tunnel endpoint (TUN ``mnt<index>``, its own policy routing table)."""
    pid = running(lab, what, "ha.mn.tunnel")
    if pid is not None:
        step(f"mobile node tunnel endpoint already running (pid {pid})")
        return
    ifname = f"mnt{index}"
    step(
        f"starting the mobile node's tunnel endpoint in {lab.mn} "
        f"(TUN {ifname} = {home}, raw IP-in-IP socket on {COA})"
    )
    offset = lab.logfile(what).stat().st_size if lab.logfile(what).exists() else 0
    cmd = [
        sys.executable, "-m", "ha.mn.tunnel", "--netns", lab.mn,
        "--home", str(home), "--coa", str(COA), "--ha", str(HA_ADDR), "--ifname", ifname,
        "--table", str(4343 + index), "--rule-priority", str(4343 + index),
    ]  # fmt: skip
    proc = spawn(lab, what, cmd)
    wait_for_log(lab, what, proc, "tunnel up:", TUNNEL_READY_TIMEOUT, offset)
    detail(lab.logfile(what).read_text(errors="replace")[offset:])


def register(lab: Lab) -> None:
    cmd = [
        "ip", "netns", "exec", lab.mn, sys.executable, "-m", "mipha.cli", "mn",
        "--ha", str(HA_ADDR), "--bind", str(COA), "--spi", str(SPI), "--key", KEY_HEX,
        "--flags", "T", "--lifetime", "3600", "--retries", "6",
        "register", "--home", str(HOME_ADDR), "--coa", str(COA),
    ]  # fmt: skip
    step(
        f"registering the mobile node from {lab.mn}: mipha mn --ha {HA_ADDR} --bind {COA} --spi {SPI} "
        f"--flags T register --home {HOME_ADDR} --coa {COA}"
    )
    proc = run(cmd, check=False)
    if proc.returncode:
        daemon_log = lab.logfile("daemon")
        tail = _tail(daemon_log.read_text(errors="replace")) if daemon_log.exists() else "    (no log)"
        raise LabError(
            f"registration failed: {(proc.stdout + proc.stderr).strip()}\n"
            f"  the daemon's log ends with:\n{tail}"
        )


def register_aaa(lab: Lab) -> None:
    """The node only RADIUS knows: NAI, home address 0.0.0.0 (RADIUS assigns it), the ERX key."""
    cmd = [
        "ip", "netns", "exec", lab.mn, sys.executable, "-m", "mipha.cli", "mn",
        "--ha", str(HA_ADDR), "--bind", str(COA), "--spi", str(AAA_SPI), "--key", AAA_KEY.hex(),
        "--flags", "T", "--lifetime", "3600", "--retries", "6",
        "register", "--nai", AAA_NAI, "--coa", str(COA),
    ]  # fmt: skip
    step(
        f"registering {AAA_NAI} from {lab.mn} (no mobile-node entry: the home agent asks FreeRADIUS): "
        f"mipha mn --ha {HA_ADDR} --bind {COA} --spi {AAA_SPI} --flags T register --nai {AAA_NAI} --coa {COA}"
    )
    proc = run(cmd, check=False)
    if proc.returncode:
        tail = _tail(lab.logfile("radius").read_text(errors="replace"))
        raise LabError(
            f"AAA registration failed: {(proc.stdout + proc.stderr).strip()}\n"
            f"  FreeRADIUS's log ends with:\n{tail}"
        )


def show_accounting(lab: Lab, timeout: float = 10.0) -> None:
    """FreeRADIUS's accounting Start for the AAA node, from its detail file (polled: it is sent after
    the reply)."""
    step(f"FreeRADIUS's accounting detail file ({lab.dir / 'radius' / 'acct'}): the Start of {AAA_NAI}")
    deadline = time.monotonic() + timeout
    while True:
        starts = [
            r
            for r in radiusd.accounting_records(lab.dir / "radius")
            if r.get("User-Name") == AAA_NAI and r.get("Acct-Status-Type") == "Start"
        ]
        if starts:
            break
        if time.monotonic() > deadline:
            raise LabError(f"no accounting Start for {AAA_NAI} within {timeout:.0f} s")
        time.sleep(0.1)
    keys = ("Acct-Status-Type", "Acct-Session-Id", "User-Name", "Framed-IP-Address", "Calling-Station-Id")
    detail("\n".join(f"{k} = {starts[-1].get(k, '-')}" for k in keys))


def ping(lab: Lab, count: int, timeout: float = 2.0, target: IPv4Address = HOME_ADDR) -> int:
    """ICMP echo from the correspondent's namespace (a raw socket: no ``ping`` binary needed).

    Prints one line per reply, like ping(8); returns the number of replies, raises when there is none.
    """
    path = "UDP tunnel -> NAT" if lab.nat else "IP-in-IP"
    step(f"ping {target} from the correspondent ({lab.cn}): home link -> HA -> {path} -> mobile node")
    ident = os.getpid() & 0xFFFF
    payload = b"mipha-lab-demo".ljust(56, b".")
    with NetnsThread(lab.cn) as cn:
        sock = cn.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    received = 0
    with sock:
        for seq in range(1, count + 1):
            echo = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
            echo = echo[:2] + struct.pack("!H", internet_checksum(echo)) + echo[4:]
            sent = time.monotonic()
            sock.sendto(echo, (str(target), 0))
            deadline = sent + timeout
            answered = False
            while not answered and (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    packet, (src, _) = sock.recvfrom(2048)
                except TimeoutError:
                    break
                icmp = packet[(packet[0] & 0x0F) * 4 :]
                if src == str(target) and icmp[:1] == b"\x00" and icmp[4:8] == echo[4:8]:
                    rtt = (time.monotonic() - sent) * 1000
                    detail(f"{len(icmp)} bytes from {src}: icmp_seq={seq} ttl={packet[8]} time={rtt:.2f} ms")
                    answered = True
            if answered:
                received += 1
            else:
                detail(f"no reply to icmp_seq={seq} within {timeout:.0f} s")
            if seq < count:
                time.sleep(0.2)
    detail(f"{count} packets transmitted, {received} received")
    if not received:
        raise LabError(f"ping {target} from {lab.cn} got no reply")
    return received


def read_bindings(lab: Lab) -> list[dict[str, str]]:
    """The VR's bindings over NETCONF (ncclient, admin/admin), one dict of leaf -> text per binding."""
    try:
        from ncclient import manager
        from ncclient.transport import session as nc_session
    except ImportError as exc:
        raise LabError(f"ncclient is not installed ({exc}): pip install -e .") from exc
    nc_session.TICK = 0.001  # the default 0.1 s poll adds 100 ms to every RPC
    subtree = (
        f'<virtual-routers xmlns="{NS}"><virtual-router><name>{VR_NAME}</name>'
        "<home-agent><bindings/></home-agent></virtual-router></virtual-routers>"
    )
    try:
        with manager.connect(
            host="127.0.0.1",
            port=lab.port,
            username="admin",
            password="admin",
            hostkey_verify=False,
            look_for_keys=False,
            allow_agent=False,
            timeout=30,
        ) as m:
            reply = m.get(filter=("subtree", subtree))
    except Exception as exc:  # ncclient raises many unrelated types
        raise LabError(f"NETCONF get on 127.0.0.1:{lab.port} failed: {exc}") from exc
    root = etree.fromstring(reply.data_xml.encode() if isinstance(reply.data_xml, str) else reply.data_xml)
    rows = []
    for b in root.iter(f"{{{NS}}}binding"):
        rows.append({etree.QName(leaf).localname: (leaf.text or "").strip() for leaf in b})
    return rows


BINDING_COLUMNS = (
    ("home-address", "home address"),
    ("care-of-address", "care-of address"),
    ("mobile-node", "mobile node"),
    ("lifetime-granted", "granted"),
    ("lifetime-remaining", "remaining"),
    ("flags", "flags"),
    ("encapsulation", "encap"),
    ("tunnel-interface", "tunnel"),
    ("registered-at", "registered at"),
)
AAA_COLUMNS = (
    ("home-address", "home address"),
    ("mobile-node", "mobile node"),
    ("authentication", "auth"),
    ("key-source", "key"),
    ("address-source", "address from"),
    ("acct-session-id", "acct session"),
)
NAT_COLUMNS = (
    ("home-address", "home address"),
    ("care-of-address", "care-of address"),
    ("mobile-node", "mobile node"),
    ("lifetime-remaining", "remaining"),
    ("flags", "flags"),
    ("udp-tunnel", "udp"),
    ("nat-address", "nat address"),
    ("nat-port", "nat port"),
)


def binding_table(rows: list[dict[str, str]], columns: tuple[tuple[str, str], ...] = BINDING_COLUMNS) -> str:
    """A plain-text table, one line per binding."""
    cells = [[title for _, title in columns]]
    cells += [[row.get(key, "-") or "-" for key, _ in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def show_kernel(lab: Lab) -> None:
    ha = lab.ha
    for title, cmd in (
        ("ip link", ["ip", "-n", ha, "-br", "link"]),
        ("ip route (main table)", ["ip", "-n", ha, "route"]),
        (f"ip route show table {MIPHA_TABLE} (mipha's host routes)",
         ["ip", "-n", ha, "route", "show", "table", str(MIPHA_TABLE)]),
        ("ip rule", ["ip", "-n", ha, "rule"]),
        ("ip neigh show proxy (proxy ARP for the home address)", ["ip", "-n", ha, "neigh", "show", "proxy"]),
        ("ip neigh", ["ip", "-n", ha, "neigh"]),
    ):  # fmt: skip
        step(f"in {ha}: {title}")
        proc = run(cmd, check=False, quiet=True)
        detail(proc.stdout if proc.stdout.strip() else "(nothing)")


def start_udp_tunnel(lab: Lab) -> None:
    pid = running(lab, "udp-tunnel", "ha.mn.udp_tunnel")
    if pid is not None:
        step(f"mobile node UDP tunnel endpoint already running (pid {pid})")
        return
    step(
        f"starting the mobile node behind the NAT in {lab.mn}: it registers from {PRIVATE_COA} with a UDP "
        f"Tunnel Request (RFC 3519) and carries its side of the tunnel (TUN mnt0 = {HOME_ADDR})"
    )
    offset = lab.logfile("udp-tunnel").stat().st_size if lab.logfile("udp-tunnel").exists() else 0
    cmd = [
        sys.executable, "-m", "ha.mn.udp_tunnel", "--netns", lab.mn, "--home", str(HOME_ADDR),
        "--coa", str(PRIVATE_COA), "--ha", str(HA_ADDR), "--spi", str(SPI), "--key", KEY_HEX,
        "--lifetime", "3600", "--keepalive", "20",
    ]  # fmt: skip
    proc = spawn(lab, "udp-tunnel", cmd)
    wait_for_log(lab, "udp-tunnel", proc, "udp tunnel up:", TUNNEL_READY_TIMEOUT, offset)
    detail(lab.logfile("udp-tunnel").read_text(errors="replace")[offset:])


def show_nat(lab: Lab) -> None:
    for title, cmd in (
        ("nft list ruleset", ["ip", "netns", "exec", lab.nat_ns, "nft", "list", "ruleset"]),
        ("conntrack -L -p udp (the mobile node's mapping)",
         ["ip", "netns", "exec", lab.nat_ns, "conntrack", "-L", "-p", "udp"]),
    ):  # fmt: skip
        step(f"in {lab.nat_ns}: {title}")
        proc = run(cmd, check=False, quiet=True)
        detail((proc.stdout + proc.stderr).strip() or "(nothing)")


def demo(lab: Lab, count: int) -> None:
    up(lab)
    if lab.nat:
        demo_nat(lab, count)
        return
    start_tunnel(lab)
    register(lab)
    ping(lab, count)
    step(f"reading the binding over NETCONF (ncclient, 127.0.0.1:{lab.port}, admin/admin)")
    rows = read_bindings(lab)
    wanted = [
        r for r in rows if r.get("home-address") == str(HOME_ADDR) and r.get("care-of-address") == str(COA)
    ]
    if not wanted:
        raise LabError(f"NETCONF shows no binding {HOME_ADDR} -> {COA} (got {rows})")
    detail(binding_table(rows))
    aaa = running(lab, "radius", radiusd.BINARY) is not None
    if aaa:
        demo_aaa(lab, count)
    show_kernel(lab)
    also = f"; {AAA_NAI} was authenticated by FreeRADIUS" if aaa else ""
    step(
        "demo done: the home address answered through the tunnel, the binding is in the operational state"
        + also
    )
    extra = "" if lab.prefix == "mipha-lab" else f" --prefix {lab.prefix}"
    detail(
        f"try: ip netns exec {lab.cn} ping {HOME_ADDR}   (ping from iputils-ping)\n"
        f"     mipha lab demo{extra}   (registers again, pings, shows the binding)\n"
        f"     NETCONF: ssh -p {lab.port} admin@127.0.0.1 -s netconf (password admin)\n"
        f"     logs: {lab.logfile('daemon')}, {lab.logfile('tunnel')}, {lab.logfile('radius')}\n"
        f"stop: mipha lab down{extra}"
    )  # fmt: skip


def demo_aaa(lab: Lab, count: int) -> None:
    """The node FreeRADIUS authenticates: its tunnel endpoint, registration, ping, binding, Start."""
    start_tunnel(lab, "aaa-tunnel", AAA_HOME, 1)
    register_aaa(lab)
    ping(lab, count, target=AAA_HOME)
    step("the AAA-learnt binding over NETCONF: where its key and address came from")
    rows = [r for r in read_bindings(lab) if r.get("mobile-node") == f"aaa:{AAA_NAI}"]
    if not rows or rows[0].get("home-address") != str(AAA_HOME):
        raise LabError(f"NETCONF shows no binding of aaa:{AAA_NAI} for {AAA_HOME}")
    detail(binding_table(rows, AAA_COLUMNS))
    show_accounting(lab)


def demo_nat(lab: Lab, count: int) -> None:
    start_udp_tunnel(lab)
    ping(lab, count)
    step(f"reading the binding over NETCONF (ncclient, 127.0.0.1:{lab.port}, admin/admin)")
    rows = read_bindings(lab)
    wanted = [r for r in rows if r.get("home-address") == str(HOME_ADDR) and r.get("udp-tunnel") == "true"]
    if not wanted:
        raise LabError(f"NETCONF shows no UDP-tunnelled binding for {HOME_ADDR} (got {rows})")
    detail(binding_table(rows, NAT_COLUMNS))
    show_nat(lab)
    step(
        f"demo done: {HOME_ADDR} answered through the NAT; the home agent tunnels in UDP to the mapping "
        f"{wanted[0].get('nat-address')}:{wanted[0].get('nat-port')}"
    )
    extra = "" if lab.prefix == "mipha-lab" else f" --prefix {lab.prefix}"
    detail(
        f"try: ip netns exec {lab.nat_ns} conntrack -F   (the NAT forgets the mapping; the node's next "
        f"renewal comes from a new port and the binding's nat-port follows)\n"
        f"     logs: {lab.logfile('daemon')}, {lab.logfile('udp-tunnel')}\n"
        f"stop: mipha lab down{extra}"
    )


# -- down -----------------------------------------------------------------------------------------------


def down(lab: Lab) -> None:
    owned = lab.owned()
    stop_process(lab, "tunnel", "ha.mn.tunnel")
    _last_line(lab, "tunnel", "tunnel down:")
    stop_process(lab, "aaa-tunnel", "ha.mn.tunnel")
    _last_line(lab, "aaa-tunnel", "tunnel down:")
    stop_process(lab, "udp-tunnel", "ha.mn.udp_tunnel")
    _last_line(lab, "udp-tunnel", "udp tunnel down:")
    stop_process(lab, "daemon", "mipha.cli")
    _last_line(lab, "daemon", "mipha stopped")
    stop_process(lab, "radius", radiusd.BINARY)  # after the daemon: its Stop records reach it
    delete_topology(lab)
    foreign = [ns for ns in lab.namespaces if netns_exists(ns)]
    if lab.dir.exists():
        step(f"removing {lab.dir} (logs, daemon state)")
        for path in sorted(lab.dir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
        lab.dir.rmdir()
    if foreign:
        raise LabError(
            f"namespace(s) {', '.join(foreign)} were not created by `mipha lab` and were left alone: "
            f"delete them yourself if they are leftovers (ip netns del NAME)"
        )
    if not owned:
        step("no lab namespaces were recorded: nothing else to remove")
    step("lab down")


def _last_line(lab: Lab, what: str, needle: str) -> None:
    """Show the line a stopped process wrote on its way out (tunnel counters, daemon stop)."""
    try:
        lines = lab.logfile(what).read_text(errors="replace").splitlines()
    except OSError:
        return
    for line in reversed(lines):
        if needle in line:
            detail(line)
            return
