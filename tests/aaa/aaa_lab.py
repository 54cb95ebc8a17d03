"""The AAA setting the tests and benches share: a network namespace with a unique name, a real
FreeRADIUS on its loopback (:class:`freeradius.FreeRadius`) and a `mipha run` daemon
(:class:`daemon_harness.Daemon`) configured over NETCONF for AAA.  Everything it started is ended by
PID and the namespace removed in ``finally``, whatever the caller raised."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from daemon_harness import Daemon
from free_ports import free_port
from freeradius import FreeRadius


@dataclass
class AaaLab:
    """What a caller needs: the namespace's name, FreeRADIUS, and the daemon once it runs."""

    netns: str
    radiusd: FreeRadius
    tmp: Path
    daemon: Daemon | None = None

    def start_daemon(self, config: str) -> Daemon:
        """`mipha run` (its files under ``tmp``), then ``config`` written to running over NETCONF."""
        self.daemon = Daemon(self.tmp, free_port())
        self.daemon.start()
        with self.daemon.connect() as m:
            m.edit_config(target="running", config=config)
        return self.daemon

    def close(self) -> None:
        try:
            if self.daemon is not None:
                self.daemon.stop()
        finally:
            proc = self.radiusd.proc
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # a caller's SIGSTOP must not outlive it
            self.radiusd.stop()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def aaa_lab(
    tmp: Path,
    *,
    name: str,
    secret: str,
    addresses: tuple[str, ...],
    users: str = "",
    config: Callable[[str], str] | None = None,
    status_server: bool = True,
) -> Iterator[AaaLab]:
    """The namespace ``mipha-<name>-<pid>-<random>`` with ``lo`` up and ``addresses`` (CIDR) on it,
    FreeRADIUS started there with ``secret`` and ``users`` appended to its users file (and, without
    ``status_server``, ignoring Status-Server), then — when ``config`` is given — the daemon configured
    with ``config(netns)``; without it the caller starts the daemon (``lab.start_daemon``) when it is
    ready for one."""
    netns = f"mipha-{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    _ip("netns", "add", netns)
    lab = None
    try:
        _ip("-n", netns, "link", "set", "lo", "up")
        for address in addresses:
            _ip("-n", netns, "addr", "add", address, "dev", "lo")
        lab = AaaLab(netns, FreeRadius(tmp / "raddb", secret=secret, netns=netns), tmp)
        if users:
            lab.radiusd.append_users(users)
        if not status_server:
            conf = lab.radiusd.dir / "radiusd.conf"
            conf.write_text(conf.read_text().replace("status_server = yes", "status_server = no"))
        lab.radiusd.start()
        if config is not None:
            lab.start_daemon(config(netns))
        yield lab
    finally:
        if lab is not None:
            lab.close()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
