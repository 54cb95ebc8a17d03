"""``mipha lab demo`` and ``mipha lab down`` as a newcomer runs them, as subprocesses, end to end.

Each test uses its own namespace prefix (``mipha-lab-t<random>``), NETCONF port and lab directory, so
it never touches a lab someone started by hand.  The fixture always runs ``lab down`` and then deletes
any namespace with the test's prefix, by name.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from free_ports import free_block

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@dataclass
class LabRun:
    prefix: str
    directory: Path
    port: int

    def namespaces(self) -> list[str]:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        return [line.split()[0] for line in out.splitlines() if line.startswith(self.prefix + "-")]

    def mipha_lab(self, action: str, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "mipha.cli", "lab", action, "--prefix", self.prefix]
        cmd += ["--dir", str(self.directory), *extra]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
        )


@pytest.fixture
def lab_run(tmp_path: Path) -> Iterator[LabRun]:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (CI runs as root)")
    run = LabRun(f"mipha-lab-t{uuid.uuid4().hex[:8]}", tmp_path / "lab", free_block(16))
    try:
        yield run
    finally:
        run.mipha_lab("down", timeout=60)
        for ns in run.namespaces():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _pids(directory: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in directory.glob("*.pid")}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_demo_then_down(lab_run: LabRun) -> None:
    """The demo: the configured node and the AAA-authenticated one (through the FreeRADIUS the lab runs),
    each registered, pinged through its tunnel and read back; ``down`` leaves no process, no namespace."""
    demo = lab_run.mipha_lab("demo", "--port", str(lab_run.port))
    out = demo.stdout
    assert demo.returncode == 0, f"demo failed:\n{out}\n{demo.stderr}"
    assert "register: code 0, lifetime 3600, home address 192.0.2.10, authenticated" in out
    assert re.search(r"bytes from 192\.0\.2\.10: icmp_seq=[1-3] ", out), out
    assert re.search(r"3 packets transmitted, [1-3] received", out), out
    # the binding table read over NETCONF: header + one row for 192.0.2.10 -> 198.51.100.7, T flag
    assert re.search(r"home address\s+care-of address\s+mobile node", out), out
    row = re.search(r"^\s+192\.0\.2\.10\s+198\.51\.100\.7\s+mn1\s+3600\s+\d+\s+(\S+)\s+(\S+)", out, re.M)
    assert row is not None, out
    assert "T" in row.group(1) and row.group(2) == "ip-in-ip", row.group(0)
    # what the home agent put in the kernel
    assert re.search(r"192\.0\.2\.10 dev mip-tun", out), out
    assert re.search(r"434:\s+from all lookup 434 proto 245", out), out
    assert re.search(r"192\.0\.2\.10 dev home0 proxy", out), out
    assert sorted(lab_run.namespaces()) == sorted(f"{lab_run.prefix}-{n}" for n in ("cn", "ha", "mn"))
    # the AAA node: no mobile-node entry, its key and address from FreeRADIUS's Access-Accept
    assert "register: code 0, lifetime 3600, home address 192.0.2.20, authenticated" in out, out
    assert re.search(r"bytes from 192\.0\.2\.20: icmp_seq=[1-3] ", out), out
    aaa = re.search(
        r"^\s+192\.0\.2\.20\s+aaa:lab-aaa@example\.net\s+aaa\s+erx\s+framed-ip-address\s+(\S+)", out, re.M
    )
    assert aaa is not None, out
    assert re.search(r"192\.0\.2\.20 dev mip-tun", out), out
    # accounting Start in FreeRADIUS's own detail file, with the session id the binding shows
    deadline = time.monotonic() + 30  # (FreeRADIUS writes it as the Accounting-Request arrives)
    while True:
        detail = "\n".join(p.read_text() for p in (lab_run.directory / "radius" / "acct").glob("**/detail*"))
        start = [
            r for r in detail.split("\n\n") if 'User-Name = "lab-aaa@example.net"' in r and "= Start" in r
        ]
        if start or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert start and f'Acct-Session-Id = "{aaa.group(1)}"' in start[0], detail
    pids = _pids(lab_run.directory)
    assert {"daemon", "radius", "tunnel", "aaa-tunnel"} <= set(pids), pids
    assert all(_alive(pid) for pid in pids.values()), pids

    down = lab_run.mipha_lab("down", timeout=60)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopping the daemon" in down.stdout and "lab down" in down.stdout
    assert f"stopping the radius (pid {pids['radius']}" in down.stdout, down.stdout
    assert lab_run.namespaces() == [], "namespaces left after lab down"
    assert not lab_run.directory.exists()
    assert not [what for what, pid in pids.items() if _alive(pid)], "processes left after lab down"


def test_up_refuses_a_namespace_it_did_not_create(lab_run: LabRun) -> None:
    foreign = f"{lab_run.prefix}-ha"
    subprocess.run(["ip", "netns", "add", foreign], check=True)
    up = lab_run.mipha_lab("up", "--port", str(lab_run.port))
    assert up.returncode == 1
    assert f"namespace(s) {foreign} exist but were not created by `mipha lab`" in up.stderr
    assert lab_run.namespaces() == [foreign], "up created or deleted namespaces after refusing"
    down = lab_run.mipha_lab("down")
    assert down.returncode == 1 and "were left alone" in down.stderr
    assert lab_run.namespaces() == [foreign], "down deleted a namespace the lab did not create"


def test_up_refuses_a_busy_port_before_building_anything(lab_run: LabRun) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        up = lab_run.mipha_lab("up", "--port", str(busy.getsockname()[1]))
    assert up.returncode == 1
    assert "is in use: stop what uses it or pass --port" in up.stderr
    assert f"clean up with: mipha lab down --prefix {lab_run.prefix}" in up.stderr
    assert lab_run.namespaces() == []


def test_demo_nat_then_down(lab_run: LabRun) -> None:
    """`mipha lab demo --nat`: the node behind an nftables masquerade registers with UDP tunnelling."""
    demo = lab_run.mipha_lab("demo", "--nat", "--port", str(lab_run.port))
    out = demo.stdout
    assert demo.returncode == 0, f"demo --nat failed:\n{out}\n{demo.stderr}"
    assert "udp tunnel up:" in out and "UDP tunnel code 0" in out, out
    assert re.search(r"bytes from 192\.0\.2\.10: icmp_seq=[1-3] ", out), out
    # the binding: private care-of address, tunnelled in UDP to the NAT's public address and port
    row = re.search(
        r"^\s*192\.0\.2\.10\s+172\.16\.0\.7\s+mn1\s+\d+\s+.*\btrue\s+198\.51\.100\.2\s+(\d+)\s*$", out, re.M
    )
    assert row is not None, out
    assert "masquerade random" in out
    assert re.search(
        rf"src=172\.16\.0\.7 dst=192\.0\.2\.1 sport=\d+ dport=434 .*dport={row.group(1)}\b", out
    ), out
    assert sorted(lab_run.namespaces()) == sorted(f"{lab_run.prefix}-{n}" for n in ("cn", "ha", "nat", "mn"))

    plain = lab_run.mipha_lab("demo", "--port", str(lab_run.port))
    assert plain.returncode == 1 and "the lab is up with the NAT" in plain.stderr

    down = lab_run.mipha_lab("down", timeout=60)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "udp tunnel down:" in down.stdout
    assert lab_run.namespaces() == [], "namespaces left after lab down"
