"""Ports for the servers the tests start on 127.0.0.1 (NETCONF, RESTCONF, metrics, etcd, RADIUS).

Asking the kernel for port 0 and closing the socket is no reservation: the next such call may get
the same port (a CI run gave etcd's m0 and m1 one peer port), and any client socket opened before
the server binds may take it. So every port handed out here is one no earlier call in this process
handed out, below the kernel's ephemeral range (no client socket is given one), and bindable for
TCP and UDP when handed out. Each process starts at a random place in the range, so two suites on
one box rarely meet; when they do, the bind check sees the other's servers.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOW = 20000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_HIGH = max(_LOW + 1024, _ephemeral_low()) - 1
_handed_out: set[int] = set()
_cursor = random.randrange(_LOW, _HIGH)


def free_port() -> int:
    """One port free for TCP and UDP on 127.0.0.1, never handed out before in this process."""
    return free_block(1)


def free_block(count: int) -> int:
    """The first of ``count`` consecutive such ports (a lab takes its base port and the next 15)."""
    global _cursor
    span = _HIGH - _LOW + 1
    for _ in range(span):
        base = _cursor
        _cursor = _LOW + (_cursor + 1 - _LOW) % span
        block = range(base, base + count)
        if block[-1] > _HIGH or any(port in _handed_out for port in block):
            continue
        if all(_bindable(port) for port in block):
            _handed_out.update(block)
            _cursor = _LOW + (block[-1] + 1 - _LOW) % span
            return base
    raise AssertionError(f"no block of {count} free ports in {_LOW}-{_HIGH} on 127.0.0.1")


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True
