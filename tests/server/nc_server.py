"""A real NETCONF server on a free loopback port, run in its own asyncio thread, and client helpers."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path

from ncclient import manager
from ncclient.transport import session as nc_session

from server.app import ServerHandle, start_server
from server.auth import User
from server.config import ServerConfig

nc_session.TICK = 0.001  # ncclient polls every TICK seconds: the default 0.1 s adds 100 ms per RPC

MIPHA_NS = "urn:mipha:yang:mipha-home-agent"
ADMIN = ("admin", "admin-secret")
OPERATOR = ("operator", "operator-secret")


class ServerThread:
    """Runs the server's event loop in a thread so synchronous clients can drive it."""

    def __init__(self, config: ServerConfig, **kw) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="netconf-server", daemon=True)
        self.thread.start()
        self.handle: ServerHandle = self.run(start_server(config, **kw))
        self.port = self.handle.port

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def call(self, fn, *args):
        """Run fn in the server's loop thread and return its result (safe access to core state)."""
        fut: Future = Future()

        def _do() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(_do)
        return fut.result(timeout=60)

    def stop(self) -> None:
        if self.loop.is_closed():
            return

        async def _close() -> None:
            self.handle.close()
            await self.handle.wait_closed()

        try:
            self.run(_close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


def make_config(state_dir: Path, host_key: Path, hashes: dict[str, str], pub: str, **kw) -> ServerConfig:
    users = [
        User(ADMIN[0], hashes[ADMIN[0]], (pub,), frozenset({"admin"})),
        User(OPERATOR[0], hashes[OPERATOR[0]], (), frozenset({"operators"})),
    ]
    return ServerConfig(
        state_dir=state_dir,
        port=0,
        users=users,
        host_key_path=host_key,
        auth_fail_delay=0.05,
        **kw,
    )


def connect(srv: ServerThread, user: tuple[str, str] = ADMIN, **kw) -> manager.Manager:
    return manager.connect(
        host="127.0.0.1",
        port=srv.port,
        username=user[0],
        password=user[1],
        hostkey_verify=False,
        allow_agent=False,
        look_for_keys=False,
        timeout=30,
        **kw,
    )
