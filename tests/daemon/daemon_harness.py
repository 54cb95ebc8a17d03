"""A `mipha run` child process for the daemon tests, and the constants they share."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ncclient import manager
from ncclient.transport import session as nc_session

from server.auth import hash_password

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dataplane"))
from dataplane_scenario import HA_ADDR, HOA

nc_session.TICK = 0.001
NS = "urn:mipha:yang:mipha-home-agent"
KEY_HEX = "00112233445566778899aabbccddeeff"
KEY_YANG = ":".join(KEY_HEX[i : i + 2] for i in range(0, 32, 2))
MIPHA = str(Path(sys.executable).parent / "mipha")


class Daemon:
    """`mipha run` as a child process; ends only the process it started, by PID."""

    def __init__(self, tmp: Path, port: int, extra_toml: str = "", *, backend: str = "tun") -> None:
        self.tmp = tmp
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.log = tmp / "daemon.log"
        (tmp / "mipha.toml").write_text(
            f"""
[netconf]
listen = "127.0.0.1:{port}"
[[user]]
name = "admin"
password-hash = "{hash_password("e2e-secret", n_log2=10)}"
groups = ["admin"]
[state]
dir = "{tmp / "state"}"
[dataplane]
backend = "{backend}"
{extra_toml}"""
        )

    def start(self) -> None:
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            [MIPHA, "run", "--config", str(self.tmp / "mipha.toml"), "--log-level", "info"],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60  # a start on a loaded box: seconds, not milliseconds
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("daemon did not listen:\n" + self.log.read_text())

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def connect(self) -> manager.Manager:
        return manager.connect(
            host="127.0.0.1",
            port=self.port,
            username="admin",
            password="e2e-secret",
            hostkey_verify=False,
            allow_agent=False,
            look_for_keys=False,
            timeout=30,
        )


def config(ha_ns: str) -> str:
    """One virtual router in ``ha_ns`` (the dataplane scenario's addresses) and one mobile node."""
    return f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<virtual-routers xmlns="{NS}"><virtual-router><name>e2e</name><netns>{ha_ns}</netns>
  <router-id>{HA_ADDR}</router-id>
  <home-agent><address>{HA_ADDR}</address><home-interface>home0</home-interface>
    <max-lifetime>600</max-lifetime></home-agent>
  <mobile-node><name>mn1</name><home-address>{HOA}</home-address>
    <security-association><spi>256</spi><key>{KEY_YANG}</key></security-association></mobile-node>
</virtual-router></virtual-routers></config>"""


#: one HMAC-MD5 security association with the shared test key
SA = f"<security-association><spi>256</spi><key>{KEY_YANG}</key></security-association>"
POOL = "<address-pool><name>roam</name><range><start>192.0.2.200</start><end>192.0.2.209</end></range></address-pool>"


def router_config(vr: str, netns: str, body: str, home_agent: str = "") -> str:
    """A <config> with one virtual router in `netns` (the daemon makes it), home agent 192.0.2.1."""
    return (
        f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="{NS}">'
        f"<virtual-router><name>{vr}</name><netns>{netns}</netns>"
        f"<home-agent><address>192.0.2.1</address>{home_agent}</home-agent>{body}"
        "</virtual-router></virtual-routers></config>"
    )


def mn_command(netns: str, *args: str, key: str = KEY_HEX) -> list[str]:
    """`mipha mn` run in the virtual router's namespace against 192.0.2.1, SPI 256."""
    return [
        "ip",
        "netns",
        "exec",
        netns,
        MIPHA,
        "mn",
        "--ha",
        "192.0.2.1",
        "--spi",
        "256",
        "--key",
        key,
        *args,
    ]
