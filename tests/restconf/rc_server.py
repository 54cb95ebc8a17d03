"""A NETCONF server with RESTCONF on the same core, on free loopback ports, in its own asyncio
thread (tests/server/nc_server.py's ServerThread), and a curl wrapper."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from nc_server import ADMIN, OPERATOR, ServerThread, make_config

from server.config import ServerConfig
from server.restconf.app import RestconfConfig, RestconfHandle, start_restconf, with_restconf

CURL = shutil.which("curl") or "/usr/bin/curl"
NS = "urn:mipha:yang:mipha-home-agent"
M = "mipha-home-agent"


class RestconfServer(ServerThread):
    """NETCONF (ncclient-reachable) and RESTCONF (https) over one core."""

    def __init__(self, config: ServerConfig, client_ca: Path | None = None, **kw) -> None:
        with_restconf(config)
        super().__init__(config, **kw)
        self.rc_config = RestconfConfig(
            state_dir=config.state_dir, port=0, users=config.users, auth_fail_delay=0.05, client_ca=client_ca
        )
        self.rc: RestconfHandle = self.run(start_restconf(self.handle.core, self.rc_config))
        self.base = f"https://127.0.0.1:{self.rc.port}"
        self.cert = self.rc.cert

    def stop(self) -> None:
        if not self.loop.is_closed():
            self.run(self.rc.close())
        super().stop()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def curl(
    srv: RestconfServer,
    method: str,
    path: str,
    body: bytes | str | None = None,
    *,
    user: tuple[str, str] | None = ADMIN,
    ctype: str | None = None,
    accept: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Reply:
    """One request with the real curl binary, verifying the server against its generated cert."""
    args = [CURL, "-sS", "--cacert", str(srv.cert), "-X", method, "-D", "-", "--max-time", str(timeout)]
    if method == "HEAD":  # -I prints the headers itself
        args = [CURL, "-sS", "--cacert", str(srv.cert), "-I", "--max-time", str(timeout)]
    if user is not None:
        args += ["-u", f"{user[0]}:{user[1]}"]
    if ctype:
        args += ["-H", f"Content-Type: {ctype}"]
    if accept:
        args += ["-H", f"Accept: {accept}"]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    data = body.encode() if isinstance(body, str) else body
    if data is not None:
        args += ["--data-binary", "@-"]
    args.append(srv.base + path)
    out = subprocess.run(args, input=data, capture_output=True, timeout=timeout + 5, check=True).stdout
    head, _, rest = out.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):
        head, _, rest = rest.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return Reply(status, hdrs, rest)


__all__ = ["ADMIN", "NS", "OPERATOR", "M", "Reply", "RestconfServer", "curl", "make_config"]
