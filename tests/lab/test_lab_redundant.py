"""``mipha lab demo --redundant``: two home agents in hot standby on a real 3-member etcd, as a newcomer
runs it (subprocesses): register, ping through the tunnel, kill -9 the active home agent, the other
takes over with the binding and the ping goes on; ``status --json``; ``down`` removes everything.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from free_ports import free_block

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_redundant_lab_demo_status_down(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (CI runs as root)")
    prefix = f"mipha-lab-r{uuid.uuid4().hex[:6]}"
    base = [sys.executable, "-m", "mipha.cli", "lab"]
    where = ["--prefix", prefix, "--dir", str(tmp_path / "lab")]

    def lab(action: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, action, *where, *extra], capture_output=True, text=True, timeout=240,
                              stdin=subprocess.DEVNULL, check=False)  # fmt: skip

    def namespaces() -> list[str]:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        return [line.split()[0] for line in out.splitlines() if line.startswith(prefix + "-")]

    try:
        demo = lab("demo", "--redundant", "--port", str(free_block(16)), "--dataplane", "tun")
        print(demo.stdout[-6000:], demo.stderr[-3000:])
        assert demo.returncode == 0, demo.stderr
        out = demo.stdout
        assert out.count("3 packets transmitted, 3 received") == 2  # before and after the failover
        # whichever daemon wins the first election is killed; the other must take over
        killed = re.search(r"kill -9 of the active home agent (ha[12]) ", out)
        assert killed, out
        survivor = {"ha1": "ha2", "ha2": "ha1"}[killed.group(1)]
        assert f"{survivor} is active" in out and "192.0.2.10    198.51.100.7" in out
        status = lab("status", "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["ha_address"] == "192.0.2.1"
        roles = {d["node"]: d["role"] for d in report["daemons"]}
        assert roles == {killed.group(1): "standby", survivor: "active"}, report
        assert all(d["pid"] for d in report["daemons"]) and len(report["etcd"]) == 3
        assert all(e["pid"] for e in report["etcd"])
        pids = [d["pid"] for d in report["daemons"]] + [e["pid"] for e in report["etcd"]]
        down = lab("down")
        assert down.returncode == 0, down.stderr
        assert namespaces() == []
        assert not [pid for pid in pids if alive(pid)], "a lab process survived down"
    finally:
        lab("down")
        for ns in namespaces():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
