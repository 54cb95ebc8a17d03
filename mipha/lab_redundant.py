"""``mipha lab up | demo | status | down --redundant``: two home agents in hot standby on etcd.

Topology (names carry the lab prefix, ``mipha-lab`` by default)::

    mobile node ──transit── router ──home link (bridge br0 in the router)──┬── home agent 1 (ha1)
    mn0 198.51.100.7        tr0 198.51.100.1   br0 192.0.2.254/24            ├── home agent 2 (ha2)
    mnt0 192.0.2.10 (home address)                                           └── correspondent (cn)
                                                                                  cn0 192.0.2.2

Each home agent namespace has 192.0.2.1 (the home agent address) on ``lo`` and its own address on
``home0`` (.11, .12); the active daemon puts 192.0.2.1 on ``home0`` too (``arp_ignore=1``: only it
answers ARP for it), so the router and the correspondent follow it.  Three etcd members (Debian
``etcd-server``) run on loopback with their data in the lab directory; the two ``mipha run`` daemons
(root namespace, NETCONF on the lab port and the next one) are members ``ha1`` / ``ha2`` of group
``lab``.  Every process is recorded by PID in the lab directory and stopped by PID by ``down``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from lxml import etree

from . import lab as base
from .lab import (
    COA,
    EXAMPLES,
    HA_ADDR,
    HOME_ADDR,
    NS,
    Lab,
    LabError,
    detail,
    ping,
    read_pid,
    register,
    run,
    running,
    spawn,
    start_tunnel,
    step,
    stop_process,
    wait_for_log,
)

ROUTER_HOME = "192.0.2.254"
ROUTER_TRANSIT = "198.51.100.1"
NODES = ("ha1", "ha2")
HOME0 = {"ha1": "192.0.2.11", "ha2": "192.0.2.12"}
ETCD_MEMBERS = 3
TAKEOVER_TIMEOUT = 15.0


@dataclass(frozen=True)
class RedundantLab(Lab):
    """Names, ports and files of a redundant lab (the single lab's fields, other namespaces)."""

    @property
    def router(self) -> str:
        return f"{self.prefix}-r"

    def ha_ns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    @property
    def ha(self) -> str:  # the first home agent (what the single lab's helpers look at)
        return self.ha_ns("ha1")

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.router, self.ha_ns("ha1"), self.ha_ns("ha2"), self.cn, self.mn)

    def netconf_port(self, node: str) -> int:
        return self.port + NODES.index(node)

    def etcd_ports(self) -> list[tuple[int, int]]:
        """(client, peer) ports of the etcd members: above the NETCONF ports, recorded in lab.json."""
        try:
            return [tuple(p) for p in json.loads(self.record.read_text())["etcd"]]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return [(self.port + 10 + 2 * i, self.port + 11 + 2 * i) for i in range(ETCD_MEMBERS)]

    def remember(self, names: list[str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.record.with_suffix(".tmp")
        record = {"namespaces": names, "port": self.port, "redundant": True, "etcd": self.etcd_ports()}
        tmp.write_text(json.dumps(record) + "\n")
        tmp.replace(self.record)


def is_redundant(lab: Lab) -> bool:
    try:
        return bool(json.loads(lab.record.read_text()).get("redundant"))
    except (FileNotFoundError, ValueError, AttributeError):
        return False


# -- topology ---------------------------------------------------------------------------------------------


def _commands(lab: RedundantLab) -> list[tuple[str, list[list[str]]]]:
    r, cn, mn = lab.router, lab.cn, lab.mn
    nx = ["ip", "netns", "exec"]

    def offloads_off(ns: str, dev: str) -> list[str]:
        # veth hands partially-checksummed packets across namespaces; a userspace tunnel endpoint
        # would forward them with wrong inner checksums (platform notes)
        return [*nx, ns, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off"]

    out: list[tuple[str, list[list[str]]]] = [
        (
            f"{r}: the home link (bridge br0, {ROUTER_HOME}/24), the transit link (tr0), forwarding",
            [
                ["ip", "-n", r, "link", "add", "br0", "type", "bridge"],
                ["ip", "-n", r, "addr", "add", f"{ROUTER_HOME}/24", "dev", "br0"],
                ["ip", "-n", r, "link", "set", "br0", "up"],
                ["ip", "-n", r, "link", "add", "tr0", "type", "veth", "peer", "name", "mn0", "netns", mn],
                ["ip", "-n", r, "addr", "add", f"{ROUTER_TRANSIT}/24", "dev", "tr0"],
                offloads_off(r, "tr0"),
                ["ip", "-n", r, "link", "set", "tr0", "up"],
                [*nx, r, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
            ],
        ),
        (
            f"{mn}: mn0 {COA}/24, default route via {ROUTER_TRANSIT} (away from home)",
            [
                ["ip", "-n", mn, "addr", "add", f"{COA}/24", "dev", "mn0"],
                offloads_off(mn, "mn0"),
                ["ip", "-n", mn, "link", "set", "mn0", "up"],
                ["ip", "-n", mn, "route", "add", "default", "via", ROUTER_TRANSIT],
            ],
        ),
    ]
    ports = [(lab.ha_ns(n), "home0", HOME0[n], f"p{n}") for n in NODES] + [(cn, "cn0", "192.0.2.2", "pcn")]
    for ns, dev, address, port in ports:
        cmds = [
            ["ip", "-n", r, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns],
            ["ip", "-n", r, "link", "set", port, "master", "br0"],
            offloads_off(r, port),
            ["ip", "-n", r, "link", "set", port, "up"],
            ["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev],
            offloads_off(ns, dev),
            ["ip", "-n", ns, "link", "set", dev, "up"],
            ["ip", "-n", ns, "route", "add", "default", "via", ROUTER_HOME],
        ]
        what = f"{ns}: {dev} {address}/24 on the home link, default route via the router"
        if dev == "home0":
            cmds += [
                ["ip", "-n", ns, "addr", "add", f"{HA_ADDR}/32", "dev", "lo"],
                [*nx, ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
                [*nx, ns, "sysctl", "-q", "-w", "net.ipv4.conf.home0.arp_ignore=1"],
            ]
            what += f"; {HA_ADDR} on lo (the active daemon adds it to home0)"
        out.append((what, cmds))
    return out


def build(lab: RedundantLab) -> None:
    lab.dir.mkdir(parents=True, exist_ok=True)
    created: list[str] = []
    for ns in lab.namespaces:
        step(f"creating network namespace {ns}")
        run(["ip", "netns", "add", ns])
        created.append(ns)
        lab.remember(created)
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
    for what, cmds in _commands(lab):
        step(what)
        for cmd in cmds:
            run(cmd, quiet=True)


# -- processes ----------------------------------------------------------------------------------------------

#: etcd's Raft timing for members on one box or one LAN (the lab's and the tests' clusters; why in
#: docs/redundancy.md, *etcd's timing*): a heartbeat every 50 ms, an election after 500 ms without one
#: (etcd's defaults are 100 / 1000 ms, sized for members further apart).
ETCD_HEARTBEAT_MS = 50
ETCD_ELECTION_MS = 500


def etcd_raft_flags(heartbeat_ms: int = ETCD_HEARTBEAT_MS, election_ms: int = ETCD_ELECTION_MS) -> list[str]:
    """etcd's Raft timing flags, and pre-vote (etcd 3.5's default; off in Debian's 3.4): a follower
    that timed out first while the other still counted the dead leader's last heartbeat is refused,
    and without pre-vote that costs a whole election round more."""
    return [
        "--heartbeat-interval", str(heartbeat_ms), "--election-timeout", str(election_ms),
        "--pre-vote=true",
    ]  # fmt: skip


def _etcd_argv(lab: RedundantLab, index: int) -> list[str]:
    ports = lab.etcd_ports()
    cluster = ",".join(f"e{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(ports))
    client, peer = ports[index]
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    return [
        etcd, "--name", f"e{index}", "--data-dir", str(lab.dir / f"etcd{index}.data"),
        "--listen-client-urls", f"http://127.0.0.1:{client}",
        "--advertise-client-urls", f"http://127.0.0.1:{client}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", cluster, "--initial-cluster-state", "new",
        "--initial-cluster-token", f"{lab.prefix}-etcd",
        *etcd_raft_flags(), "--log-level", "warn", "--logger", "zap",
    ]  # fmt: skip


def start_etcd(lab: RedundantLab) -> None:
    for i in range(ETCD_MEMBERS):
        if running(lab, f"etcd{i}", "etcd") is not None:
            continue
        client, _ = lab.etcd_ports()[i]
        step(f"starting etcd member e{i} on 127.0.0.1:{client} (data in {lab.dir / f'etcd{i}.data'})")
        spawn(lab, f"etcd{i}", _etcd_argv(lab, i))


def _toml(lab: RedundantLab, node: str) -> Path:
    endpoints = ", ".join(f'"http://127.0.0.1:{c}"' for c, _ in lab.etcd_ports())
    text = (EXAMPLES / "mipha-lab.toml").read_text()
    text += f'\n[redundancy]\netcd = [{endpoints}]\ngroup = "lab"\nnode = "{node}"\nlease-ttl = 2\n'
    path = lab.dir / f"{node}.toml"
    path.write_text(text)
    return path


def _startup(lab: RedundantLab, node: str) -> Path:
    tree = etree.parse(str(EXAMPLES / "startup.xml"))
    found = tree.findall(f".//{{{NS}}}virtual-router/{{{NS}}}netns")
    if len(found) != 1:
        raise LabError(f"{EXAMPLES / 'startup.xml'}: expected exactly one <netns> element")
    found[0].text = lab.ha_ns(node)
    out = lab.dir / f"{node}-startup.xml"
    tree.write(str(out), xml_declaration=True, encoding="UTF-8")
    return out


def start_daemon(lab: RedundantLab, node: str) -> None:
    if running(lab, node, "mipha.cli") is not None:
        return
    port = lab.netconf_port(node)
    if not base._port_free(port):
        raise LabError(f"TCP port 127.0.0.1:{port} is in use: stop what uses it or pass --port")
    cmd = [
        sys.executable, "-m", "mipha.cli", "run", "--config", str(_toml(lab, node)),
        "--listen", f"127.0.0.1:{port}", "--state-dir", str(lab.dir / f"{node}-state"),
        "--startup", str(_startup(lab, node)), "--dataplane", lab.dataplane,
    ]  # fmt: skip
    step(f"starting home agent {node}: mipha run (NETCONF 127.0.0.1:{port}, [redundancy] group lab)")
    offset = lab.logfile(node).stat().st_size if lab.logfile(node).exists() else 0
    proc = spawn(lab, node, cmd)
    wait_for_log(lab, node, proc, "mipha running", base.DAEMON_READY_TIMEOUT, offset)


def up(lab: RedundantLab) -> None:
    if os.geteuid() != 0:
        raise LabError("the lab creates network namespaces: run it as root")
    owned = base.check_names(lab)
    if not owned:
        busy = [p for c, peer in lab.etcd_ports() for p in (c, peer) if not base._port_free(p)]
        if busy:
            raise LabError(
                f"TCP port(s) {busy} (etcd, NETCONF port + 10..15) are in use: pass another --port"
            )
        build(lab)
    elif missing := [ns for ns in lab.namespaces if ns not in owned]:
        raise LabError(f"the lab is half built or not redundant (missing {', '.join(missing)})")
    start_etcd(lab)
    for node in NODES:
        start_daemon(lab, node)
    wait_active(lab, TAKEOVER_TIMEOUT)
    show_status(lab)


# -- status ---------------------------------------------------------------------------------------------


def role_of(lab: RedundantLab, node: str) -> dict[str, str]:
    """The daemon's op state ``redundancy`` (leaf -> text), {} when it does not answer."""
    from ncclient import manager
    from ncclient.transport import session as nc_session

    nc_session.TICK = 0.001
    try:
        with manager.connect(
            host="127.0.0.1", port=lab.netconf_port(node), username="admin", password="admin",
            hostkey_verify=False, look_for_keys=False, allow_agent=False, timeout=10,
        ) as m:  # fmt: skip
            reply = m.get(filter=("subtree", f'<redundancy xmlns="{NS}"/>'))
    except Exception:  # ncclient raises many unrelated types; a dead daemon is a normal answer here
        return {}
    root = etree.fromstring(reply.data_xml.encode() if isinstance(reply.data_xml, str) else reply.data_xml)
    return {etree.QName(el).localname: el.text or "" for el in root.iter() if len(el) == 0}


def status(lab: RedundantLab) -> dict:
    daemons = []
    for node in NODES:
        pid = running(lab, node, "mipha.cli")
        state = role_of(lab, node) if pid is not None else {}
        daemons.append(
            {
                "node": node,
                "pid": pid,
                "netconf_port": lab.netconf_port(node),
                "role": state.get("role", "down"),
            }
        )
    etcd = [
        {"name": f"e{i}", "pid": running(lab, f"etcd{i}", "etcd"), "endpoint": f"http://127.0.0.1:{c}"}
        for i, (c, _) in enumerate(lab.etcd_ports())
    ]
    return {"ha_address": str(HA_ADDR), "daemons": daemons, "etcd": etcd}


def show_status(lab: RedundantLab) -> None:
    for d in status(lab)["daemons"]:
        detail(f"{d['node']}: pid {d['pid']}, NETCONF 127.0.0.1:{d['netconf_port']}, {d['role']}")


def wait_active(lab: RedundantLab, timeout: float, *, other_than: str | None = None) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in NODES:
            if (
                node != other_than
                and running(lab, node, "mipha.cli")
                and role_of(lab, node).get("role") == "active"
            ):
                return node
        time.sleep(0.2)
    raise LabError(f"no home agent became active within {timeout:.0f} s")


# -- demo -----------------------------------------------------------------------------------------------


def demo(lab: RedundantLab, count: int) -> None:
    up(lab)
    start_tunnel(lab)
    register(lab)
    ping(lab, count)
    active = wait_active(lab, TAKEOVER_TIMEOUT)
    pid = read_pid(lab.pidfile(active))
    assert pid is not None
    step(f"kill -9 of the active home agent {active} (pid {pid})")
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    other = wait_active(lab, TAKEOVER_TIMEOUT, other_than=active)
    step(f"{other} is active {time.monotonic() - killed:.1f} s after the kill, with the binding:")
    rows = base.read_bindings(replace(lab, port=lab.netconf_port(other)))
    if not any(r.get("home-address") == str(HOME_ADDR) for r in rows):
        raise LabError(f"the new active home agent {other} has no binding for {HOME_ADDR}: {rows}")
    detail(base.binding_table(rows))
    ping(lab, count)
    step(f"restarting {active}: it joins as the standby")
    lab.pidfile(active).unlink(missing_ok=True)
    start_daemon(lab, active)
    show_status(lab)
    extra = "" if lab.prefix == "mipha-lab" else f" --prefix {lab.prefix}"
    detail(f"status: mipha lab status --json{extra}\nstop: mipha lab down{extra}")


# -- down -----------------------------------------------------------------------------------------------


def down(lab: RedundantLab) -> None:
    stop_process(lab, "tunnel", "ha.mn.tunnel")
    for node in NODES:
        stop_process(lab, node, "mipha.cli")
    for i in range(ETCD_MEMBERS):
        stop_process(lab, f"etcd{i}", "etcd")
    base.delete_topology(lab)
    if lab.dir.exists():
        step(f"removing {lab.dir} (logs, daemon state, etcd data)")
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(lab.dir)
    step("lab down")


def main(args, lab: RedundantLab) -> None:
    """``mipha lab ACTION --redundant`` (and ``status``, and ``down`` of a redundant lab); a failed step
    raises :class:`LabError` (``mipha.lab_cli`` reports it)."""
    if args.action == "up":
        up(lab)
    elif args.action == "demo":
        demo(lab, args.count)
    elif args.action == "status":
        if args.json:
            print(json.dumps(status(lab)), flush=True)
        else:
            show_status(lab)
    else:
        down(lab)
