"""A home agent (engine + UDP transport) running on its own event loop thread, for loopback tests."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import TypeVar

from ha.engine.config import VirtualRouterConfig
from ha.engine.home_agent import HomeAgent
from ha.transport import HomeAgentTransport, open_udp_socket

T = TypeVar("T")
KEY_HEX = "00112233445566778899aabbccddeeff"


class ThreadedHomeAgent:
    """Start with ``with ThreadedHomeAgent(config) as ha:``; ``ha.call(fn)`` runs fn on the HA loop."""

    def __init__(
        self,
        config: VirtualRouterConfig,
        *,
        address: str = "127.0.0.1",
        netns: str | None = None,
        unicast: str | None = None,
    ) -> None:
        self.engine = HomeAgent(config)
        self.sock = open_udp_socket(address, 0, netns)
        self.port = self.sock.getsockname()[1]
        self.unicast = None if unicast is None else open_udp_socket(unicast, self.port, netns, pktinfo=False)
        self.loop = asyncio.new_event_loop()
        self.transport = HomeAgentTransport(
            self.engine, self.sock, unicast=self.unicast, on_output=self._drain
        )
        self.intents: list = []
        self._thread = threading.Thread(target=self._run, name="home-agent", daemon=True)
        self._ready = threading.Event()

    def _drain(self) -> None:
        self.intents.extend(self.engine.drain_intents())

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self.transport.start)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def __enter__(self) -> ThreadedHomeAgent:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.transport.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def call(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)


def mipha_mn(port: int, *args: str, ha: str = "127.0.0.1", extra: tuple[str, ...] = ()) -> dict:
    """Run ``mipha mn ... --json`` as a subprocess and return its JSON output.

    The first retransmission comes after 5 s (``extra`` may say otherwise): with timestamps a
    retransmission is a new request, and the tests count requests and attempts exactly, so a reply
    late on a loaded box must not cause one."""
    command = [
        sys.executable, "-m", "mipha.cli", "mn", "--ha", ha, "--port", str(port), "--key", KEY_HEX,
        "--bind", "127.0.0.1", "--timeout", "5", "--retries", "2", "--json", *extra, *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=env
    )
    assert done.stdout, f"mipha mn printed nothing; stderr: {done.stderr}"
    return json.loads(done.stdout)


def ip(text: str) -> IPv4Address:
    return IPv4Address(text)
