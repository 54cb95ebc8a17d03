"""Logs an operator can use: RFC 5424 to the local syslog socket, and the per-node trace rpc."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import time
import uuid
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from daemon_harness import KEY_HEX, MIPHA, NS, POOL, SA, Daemon, mn_command, router_config
from free_ports import free_port
from lxml import etree
from ncclient.operations.rpc import RPCError

from ha.protocol.codec import push_registration_request
from ha.protocol.constants import RequestFlags
from ha.protocol.messages import MobileNodeNai, RegistrationRequest
from mipha.trace import RegistrationTrace

RFC5424 = re.compile(
    r"^<(\d+)>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (\S+) mipha (\d+) - - (ts=.* msg=\".*\".*)$"
)


def request(home: str, nai: str | None = None, ident: int = 1) -> bytes:
    ext = (MobileNodeNai(nai),) if nai else ()
    return push_registration_request(
        RegistrationRequest(
            flags=RequestFlags.T,
            lifetime=600,
            home_address=IPv4Address(home),
            home_agent=IPv4Address("192.0.2.1"),
            care_of_address=IPv4Address("198.51.100.9"),
            identification=ident,
            extensions=ext,
        )
    )


def test_trace_matches_rate_limits_expires_and_detaches(caplog) -> None:
    now = [100.0]
    detached = []
    trace = RegistrationTrace("vr", lambda: detached.append(True), clock=lambda: now[0], rate=2, burst=4)
    trace.add(home=IPv4Address("192.0.2.10"), duration=60)
    trace.add(nai="b@example.com", duration=30)
    caplog.set_level(logging.INFO, logger="mipha.trace")
    src = ("198.51.100.9", 434)
    trace(request("192.0.2.10", ident=0x1234), src, None)
    trace(request("192.0.2.11"), src, None)  # not traced
    trace(request("0.0.0.0", nai="b@example.com"), src, None)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4
    assert "request from=198.51.100.9:434 home=192.0.2.10 nai=- coa=198.51.100.9" in lines[0]
    assert "lifetime=600 id=0x0000000000001234 flags=T" in lines[0]
    assert lines[1] == "trace vr=vr reply none (discarded) home=192.0.2.10"
    assert "nai=b@example.com" in lines[2]
    caplog.clear()
    for i in range(10):  # burst used up: 2 lines a second from now on
        trace(request("192.0.2.10", ident=i), src, None)
    assert len(caplog.records) == 0 and trace.suppressed == 20
    now[0] += 1.0
    trace(request("192.0.2.10"), src, None)
    assert "suppressed=20" in caplog.records[0].getMessage()
    now[0] += 100  # both traces expired: the transport hook is removed
    trace(request("192.0.2.10"), src, None)
    assert detached and not trace.active
    garbage = RegistrationTrace("vr", lambda: None)
    garbage.add(home=IPv4Address("192.0.2.10"), duration=60)
    garbage(b"\x01\x00", src, b"junk")  # never raises into the transport


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
def test_syslog_rfc5424_and_trace_rpc_against_the_daemon(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    vr, netns = f"lg{tag}", f"mipha-lg-{tag}"
    sock_path = tmp_path / "log.sock"
    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslog.bind(str(sock_path))
    syslog.settimeout(0.2)
    daemon = Daemon(tmp_path, free_port(), f'[log]\nsyslog = true\nsyslog-socket = "{sock_path}"\n')

    def received() -> list[str]:
        out = []
        while True:
            try:
                out.append(syslog.recv(65536).decode())
            except TimeoutError:
                return out

    def received_until(enough, timeout: float = 30) -> list[str]:
        """What arrives until ``enough(lines)`` holds, then until 0.2 s pass quietly (a line more than
        expected shows); a loaded box may log a line after the reply it describes was received."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while not enough(out) and time.monotonic() < deadline:
            out += received()
        return out + received()

    def register(home: str, coa: str, *nai: str) -> None:
        # no retransmission of a reply that is late on a loaded box (each attempt is traced)
        cmd = mn_command(netns, "--timeout", "5", "register", "--home", home, *nai, "--coa", coa)
        out = subprocess.run(cmd, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr

    def trace(m, sel: str, duration: int | None = None) -> None:
        d = f"<duration>{duration}</duration>" if duration is not None else ""
        m.dispatch(
            etree.fromstring(
                f'<trace-registrations xmlns="{NS}"><virtual-router>{vr}</virtual-router>{sel}{d}</trace-registrations>'
            )
        )

    try:
        daemon.start()  # (it listens just before it logs that it runs)
        lines = received_until(lambda ls: any("mipha running" in x for x in ls))
        running = [m for m in (RFC5424.match(x) for x in lines) if m and "mipha running" in m.group(5)]
        assert running, lines
        pri, _ts, host, pid = running[0].group(1, 2, 3, 4)
        assert int(pri) == 3 * 8 + 6  # facility daemon, severity info
        assert host == socket.gethostname() and int(pid) == daemon.proc.pid
        with daemon.connect() as m:
            m.edit_config(
                target="running",
                config=router_config(
                    vr,
                    netns,
                    POOL.replace("roam", "p")
                    + f"<mobile-node><name>a</name><home-address>192.0.2.10</home-address>{SA}</mobile-node>"
                    + f"<mobile-node><name>c</name><home-address>192.0.2.12</home-address>{SA}</mobile-node>"
                    + f"<mobile-node><name>b</name><nai>b@example.com</nai><address-pool>p</address-pool>{SA}</mobile-node>",
                ),
            )
            register("192.0.2.10", "198.51.100.9")
            assert not any("trace vr=" in x for x in received())  # off by default
            trace(m, "<home-address>192.0.2.10</home-address>")
            trace(m, "<nai>b@example.com</nai>", 120)
            register("192.0.2.10", "198.51.100.9")
            register("192.0.2.12", "198.51.100.9")  # not traced
            register("0.0.0.0", "198.51.100.10", "--nai", "b@example.com")
            traced = [
                x
                for x in received_until(lambda ls: sum("trace vr=" in x for x in ls) >= 4)
                if "trace vr=" in x
            ]
            assert len(traced) == 4, traced
            assert "request from=" in traced[0] and "home=192.0.2.10 nai=- coa=198.51.100.9" in traced[0]
            assert "reply to=" in traced[1] and "code=0" in traced[1] and "lifetime=600" in traced[1]
            assert "nai=b@example.com" in traced[2] and "coa=198.51.100.10" in traced[2]
            assert re.search(r"code=0 home=192\.0\.2\.20\d", traced[3])  # the pool's address
            assert not any("192.0.2.12" in x for x in traced) and KEY_HEX not in "".join(traced)
            log = daemon.log.read_text()
            assert "trace vr=" in log  # stderr too
            trace(m, "<home-address>192.0.2.10</home-address>", 0)
            trace(m, "<nai>b@example.com</nai>", 0)
            register("192.0.2.10", "198.51.100.9")
            assert not any("trace vr=" in x for x in received())
            with pytest.raises(RPCError) as ei:
                trace(m, "")
            assert ei.value.tag == "missing-element"
            with pytest.raises(RPCError) as ei:
                trace(m, "<home-address>192.0.2.10</home-address>", 999999)
            assert ei.value.tag == "invalid-value"
    finally:
        daemon.stop()
        syslog.close()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)


def test_syslog_socket_missing_is_a_startup_error(tmp_path: Path) -> None:
    daemon = Daemon(
        tmp_path, free_port(), f'[log]\nsyslog = true\nsyslog-socket = "{tmp_path / "nothing"}"\n'
    )
    out = subprocess.run(
        [MIPHA, "run", "--config", str(tmp_path / "mipha.toml")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "[log] syslog: cannot use" in out.stderr
    assert daemon.proc is None
