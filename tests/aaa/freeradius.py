"""A real FreeRADIUS 3.2 for the AAA tests: started in a network namespace on loopback with the minimal
configuration of ``mipha/data/radius`` (:mod:`mipha.radiusd`, the lab's too), stopped by PID; its
accounting ``detail`` file read back."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from mipha import radiusd


class FreeRadius:
    def __init__(
        self, workdir: Path, *, secret: str, netns: str | None, auth_port: int = 1812, acct_port: int = 1813
    ) -> None:
        self.dir = workdir
        self.secret = secret
        self.netns = netns
        self.auth_port = auth_port
        self.acct_port = acct_port
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "radiusd.log"
        radiusd.prepare(workdir)

    def append_users(self, text: str) -> None:
        radiusd.append_users(self.dir, text)

    def start(self) -> None:
        env = radiusd.environment(self.dir, self.secret, self.auth_port, self.acct_port)
        command = radiusd.command(self.dir, self.netns)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60  # FreeRADIUS reads its dictionaries: slow on a loaded box
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            if radiusd.READY in self.log.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise AssertionError("FreeRADIUS did not start:\n" + self.log.read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def accounting(self) -> list[dict[str, str]]:
        """The records of the ``detail`` file, each as attribute -> value (quotes stripped)."""
        return radiusd.accounting_records(self.dir)

    def wait_accounting(self, predicate, timeout: float = 30.0) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.accounting() if predicate(r)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)
