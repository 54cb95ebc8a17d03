"""tshark on a namespace's link for the RFC 3519/3543 daemon tests, and the counters they read."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

from lxml import etree
from ncclient import manager

NS = "urn:mipha:yang:mipha-home-agent"


def statistics(m: manager.Manager, vr: str) -> dict[str, str]:
    """The home agent counters of virtual router ``vr`` over NETCONF."""
    flt = f'<virtual-routers xmlns="{NS}"><virtual-router><name>{vr}</name><home-agent><statistics/></home-agent></virtual-router></virtual-routers>'
    data = etree.fromstring(m.get(filter=("subtree", flt)).data_xml.encode())
    stats = data.find(f".//{{{NS}}}statistics")
    return {etree.QName(c).localname: c.text for c in stats}


class Capture:
    """tshark on one link of a namespace (UDP 434 only), started and stopped by PID."""

    def __init__(self, ns: str, path: Path, *, interface: str) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "tshark", "-n", "-i", interface, "-f", "udp port 434", "-w", str(path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stderr is not None
        # Raw reads of the pipe: a buffered readline() could swallow "Capture started" behind an
        # earlier line, and select() would then wait for data that is already read.
        fd = self.proc.stderr.fileno()
        seen = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and b"Capture started" not in seen:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break  # tshark exited
                seen += chunk
        if b"Capture started" not in seen:
            self.stop()
            raise AssertionError(f"tshark did not start capturing: {seen.decode(errors='replace')!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def wait_for(self, mip_types: set[str], timeout: float = 15.0) -> None:
        """Until frames of these ``mip.type`` values are in the file (dumpcap writes behind tshark: a
        capture stopped right after the last datagram can lose it)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if mip_types <= {r["mip.type"] for r in self.decode()}:
                    return
            except subprocess.CalledProcessError:
                pass  # read in the middle of a block being written: try again
            assert time.monotonic() < deadline, f"no frames of types {mip_types} captured"
            time.sleep(0.2)

    def decode(self, *extra: str) -> list[dict[str, str]]:
        """One row per captured frame: these tshark fields, and the ``extra`` ones asked for."""
        fields = [
            "frame.number",
            "mip.type",
            "mip.code",
            "mip.ext.type",
            "mip.ext.utrp.code",
            "_ws.malformed",
            *extra,
        ]
        cmd = [
            "tshark",
            "-n",
            "-r",
            str(self.path),
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-E",
            "occurrence=a",
        ]
        cmd += ["-E", "aggregator=,"]
        for f in fields:
            cmd += ["-e", f]
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, check=True, stdin=subprocess.DEVNULL
        )
        return [dict(zip(fields, line.split("|"), strict=True)) for line in out.stdout.splitlines() if line]
