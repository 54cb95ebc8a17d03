"""A real FreeRADIUS 3.2 for the AAA tests: started in a network namespace on loopback with the minimal
configuration in ``tests/aaa/raddb``, stopped by PID; its accounting ``detail`` file read back."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

RADDB = Path(__file__).resolve().parent / "raddb"
DICTIONARIES = "/usr/share/freeradius"


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
        workdir.mkdir(parents=True, exist_ok=True)
        for name in ("radiusd.conf", "users"):
            shutil.copy(RADDB / name, workdir / name)
        (workdir / "acct").mkdir(exist_ok=True)

    def append_users(self, text: str) -> None:
        with (self.dir / "users").open("a") as f:
            f.write(text)

    def start(self) -> None:
        env = dict(
            os.environ,
            MIPHA_RADDB=str(self.dir),
            MIPHA_RADIUS_SECRET=self.secret,
            MIPHA_RADIUS_AUTH_PORT=str(self.auth_port),
            MIPHA_RADIUS_ACCT_PORT=str(self.acct_port),
        )
        command = ["freeradius", "-f", "-l", "stdout", "-d", str(self.dir), "-D", DICTIONARIES]
        if self.netns is not None:
            command = ["ip", "netns", "exec", self.netns, *command]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            if "Ready to process requests" in self.log.read_text(errors="replace"):
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
        records: list[dict[str, str]] = []
        for path in sorted((self.dir / "acct").glob("**/detail*")):
            current: dict[str, str] | None = None
            for line in path.read_text(errors="replace").splitlines():
                if line and not line[0].isspace():
                    current = {}
                    records.append(current)
                elif current is not None and "=" in line:
                    key, _, value = line.strip().partition(" = ")
                    current[key] = value.strip('"')
        return records

    def wait_accounting(self, predicate, timeout: float = 5.0) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.accounting() if predicate(r)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)
