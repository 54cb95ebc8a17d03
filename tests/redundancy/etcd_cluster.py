"""A real 3-member etcd cluster (Debian ``etcd-server``) on loopback, started and stopped by PID.

Every member gets its own data directory under the test's temporary directory and two free loopback
ports; heartbeat 50 ms, election timeout 500 ms, as the lab runs them (docs/redundancy.md, *etcd's
timing*; with etcd's defaults, 100 / 1000 ms, platform-notes measured a write succeeding again ~1.1 s
after the leader is SIGKILLed).  Members log at level info: the time a new
Raft leader was elected is read back from the logs (:meth:`EtcdCluster.elected_after`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from free_ports import free_port

from mipha.lab_redundant import ETCD_ELECTION_MS, ETCD_HEARTBEAT_MS, etcd_raft_flags

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen | None = None
    scheme: str = "http"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"


@dataclass
class EtcdCluster:
    base: Path
    size: int = 3
    members: list[Member] = field(default_factory=list)
    token: str = field(default_factory=lambda: f"mipha-test-{uuid.uuid4().hex[:8]}")
    #: more addresses the members' client ports listen on (a veth the test made, for partitions)
    listen_also: list[str] = field(default_factory=list)
    heartbeat_ms: int = ETCD_HEARTBEAT_MS  # the lab's (docs/redundancy.md, *etcd's timing*)
    election_ms: int = ETCD_ELECTION_MS
    extra: list[str] = field(default_factory=list)  # more etcd flags (benchmarks)
    #: client TLS, files "ca", "cert", "key": the members serve https:// with that certificate and
    #: accept only clients with a certificate the CA signed (--client-cert-auth)
    tls: dict[str, Path] | None = None

    def __post_init__(self) -> None:
        scheme = "https" if self.tls else "http"
        for i in range(self.size):
            self.members.append(
                Member(
                    f"m{i}", free_port(), free_port(), self.base / f"m{i}.etcd", self.base / f"m{i}.log",
                    scheme=scheme,
                )
            )  # fmt: skip

    def tls_flags(self) -> list[str]:
        if not self.tls:
            return []
        t = self.tls
        return ["--cert-file", str(t["cert"]), "--key-file", str(t["key"]),
                "--trusted-ca-file", str(t["ca"]), "--client-cert-auth"]  # fmt: skip

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @contextlib.contextmanager
    def running(self) -> Iterator[EtcdCluster]:
        """Started in a fresh ``base``; every member stopped by PID on the way out, whatever happened."""
        self.base.mkdir()
        try:
            self.start()
            yield self
        finally:
            self.stop()

    def start(self) -> None:
        for m in self.members:
            self.start_member(m, new=True)
        self.wait_healthy()

    def start_member(self, m: Member, *, new: bool = False) -> None:
        cluster = ",".join(f"{x.name}=http://127.0.0.1:{x.peer_port}" for x in self.members)
        argv = [
            ETCD,
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", ",".join([m.endpoint, *self.urls_on(m)]),
            "--advertise-client-urls", m.endpoint,
            "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-cluster", cluster,
            "--initial-cluster-state", "new" if new else "existing",
            "--initial-cluster-token", self.token,
            *etcd_raft_flags(self.heartbeat_ms, self.election_ms),
            *self.tls_flags(),
            *self.extra,
            "--log-level", "info",
            "--logger", "zap",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        m.proc = subprocess.Popen(argv, stdout=m.log.open("ab"), stderr=subprocess.STDOUT, env=env,
                                  stdin=subprocess.DEVNULL)  # fmt: skip

    def urls_on(self, m: Member) -> list[str]:
        return [f"{m.scheme}://{a}:{m.client_port}" for a in self.listen_also]

    def ctl(self, *args: str, endpoints: list[str] | None = None, timeout: float = 10) -> str:
        env = {**os.environ, "ETCDCTL_API": "3"}
        eps = ",".join(endpoints or [m.endpoint for m in self.members if self.alive(m)])
        tls = (
            [f"--cacert={self.tls['ca']}", f"--cert={self.tls['cert']}", f"--key={self.tls['key']}"]
            if self.tls
            else []
        )
        out = subprocess.run([ETCDCTL, f"--endpoints={eps}", "--command-timeout=3s", *tls, *args],
                             capture_output=True, text=True, env=env, timeout=timeout, check=True)  # fmt: skip
        return out.stdout

    def alive(self, m: Member) -> bool:
        return m.proc is not None and m.proc.poll() is None

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                self.ctl("put", "/mipha-test/health", "ok")
                return
            except subprocess.SubprocessError as exc:
                last = str(getattr(exc, "stderr", exc))
                time.sleep(0.2)
        logs = "\n".join(m.log.read_text()[-2000:] for m in self.members if m.log.exists())
        raise AssertionError(f"etcd cluster not healthy: {last}\n{logs}")

    def leader(self) -> Member:
        """The member etcd reports as its Raft leader."""
        status = json.loads(self.ctl("endpoint", "status", "-w", "json"))
        for entry in status:
            if entry["Status"]["header"]["member_id"] == entry["Status"]["leader"]:
                port = int(entry["Endpoint"].rsplit(":", 1)[1])
                return next(m for m in self.members if m.client_port == port)
        raise AssertionError(f"no etcd leader in {status}")

    def elected_after(self, since: float) -> float | None:
        """Unix time at which a member became Raft leader after ``since`` (from the members' logs:
        etcd's own election, to compare a pause with); None if none did yet."""
        found = []
        for m in self.members:
            if not m.log.exists():
                continue
            for line in m.log.read_text(errors="replace").splitlines():
                if "became leader at term" not in line:
                    continue
                try:
                    stamp = json.loads(line)["ts"]
                except (ValueError, KeyError):
                    continue
                when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
                if when.timestamp() > since:
                    found.append(when.timestamp())
        return min(found, default=None)

    def kill(self, m: Member) -> None:
        """SIGKILL one member (by its PID)."""
        assert m.proc is not None
        os.kill(m.proc.pid, signal.SIGKILL)
        m.proc.wait(timeout=10)

    def stop(self) -> None:
        for m in self.members:
            if self.alive(m):
                assert m.proc is not None
                os.kill(m.proc.pid, signal.SIGKILL)  # the data is thrown away: no graceful stop
        for m in self.members:
            if m.proc is not None:
                try:
                    m.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(m.proc.pid, signal.SIGKILL)
                    m.proc.wait(timeout=10)
