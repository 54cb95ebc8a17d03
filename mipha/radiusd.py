"""A FreeRADIUS 3.2 configuration for the lab, the tests and the bench, from one template.

``mipha/data/radius/`` holds a minimal, complete configuration (files + pap + chap + detail,
``require_message_authenticator``, an empty Access-Reject, Status-Server) and example subscribers.
:func:`prepare` copies it into a directory of its own; :func:`command` and :func:`environment` start
``freeradius -f`` on it (the caller starts it, records its PID and stops it by that PID);
:func:`accounting_records` reads back the ``detail`` file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "data" / "radius"
DICTIONARIES = "/usr/share/freeradius"
READY = "Ready to process requests"
BINARY = "freeradius"


def prepare(directory: Path, extra_users: str = "") -> None:
    """``radiusd.conf`` and ``users`` from the template (``extra_users`` appended), an ``acct/`` dir."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("radiusd.conf", "users"):
        shutil.copy(TEMPLATE / name, directory / name)
    (directory / "acct").mkdir(exist_ok=True)
    if extra_users:
        append_users(directory, extra_users)


def append_users(directory: Path, text: str) -> None:
    with (directory / "users").open("a") as f:
        f.write(text)


def command(directory: Path, netns: str | None = None) -> list[str]:
    """``freeradius`` in the foreground (its PID is the process's), in ``netns`` when given."""
    cmd = [BINARY, "-f", "-l", "stdout", "-d", str(directory), "-D", DICTIONARIES]
    return ["ip", "netns", "exec", netns, *cmd] if netns is not None else cmd


def environment(directory: Path, secret: str, auth_port: int = 1812, acct_port: int = 1813) -> dict[str, str]:
    """What the template reads with ``$ENV{}``: its directory, the client's secret, the ports."""
    return dict(
        os.environ,
        MIPHA_RADDB=str(directory),
        MIPHA_RADIUS_SECRET=secret,
        MIPHA_RADIUS_AUTH_PORT=str(auth_port),
        MIPHA_RADIUS_ACCT_PORT=str(acct_port),
    )


def available() -> bool:
    return shutil.which(BINARY) is not None


def accounting_records(directory: Path) -> list[dict[str, str]]:
    """The records of the ``detail`` file(s), each as attribute -> value (quotes stripped)."""
    records: list[dict[str, str]] = []
    for path in sorted((directory / "acct").glob("**/detail*")):
        current: dict[str, str] | None = None
        for line in path.read_text(errors="replace").splitlines():
            if line and not line[0].isspace():
                current = {}
                records.append(current)
            elif current is not None and "=" in line:
                key, _, value = line.strip().partition(" = ")
                current[key] = value.strip('"')
    return records
