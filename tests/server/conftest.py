"""Fixtures: a real NETCONF server on a free loopback port, run in its own asyncio thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import asyncssh
import pytest
from ncclient import manager
from ncclient.transport import session as nc_session

from server.app import ServerHandle, start_server
from server.auth import User, hash_password
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


@pytest.fixture(scope="session")
def client_key(tmp_path_factory) -> tuple[Path, str]:
    """An Ed25519 key pair for public-key logins (OpenSSH format on disk)."""
    d = tmp_path_factory.mktemp("client-key")
    key = asyncssh.generate_private_key("ssh-ed25519")
    path = d / "id_ed25519"
    key.write_private_key(str(path))
    path.chmod(0o600)
    pub = key.export_public_key().decode().strip()
    (d / "id_ed25519.pub").write_text(pub + "\n")
    return path, pub


@pytest.fixture(scope="session")
def password_hashes() -> dict[str, str]:
    return {ADMIN[0]: hash_password(ADMIN[1], n_log2=10), OPERATOR[0]: hash_password(OPERATOR[1], n_log2=10)}


@pytest.fixture(scope="session")
def host_key_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostkey") / "ssh_host_ed25519_key"


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


@pytest.fixture
def server_factory(tmp_path, host_key_path, password_hashes, client_key):
    started: list[ServerThread] = []

    def factory(state_dir: Path | None = None, **kw) -> ServerThread:
        cfg = make_config(
            state_dir or tmp_path / "state", host_key_path, password_hashes, client_key[1], **kw
        )
        srv = ServerThread(cfg)
        started.append(srv)
        return srv

    yield factory
    for s in started:
        s.stop()


@pytest.fixture
def server(server_factory) -> ServerThread:
    return server_factory()


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


@pytest.fixture
def nc(server) -> Iterator[manager.Manager]:
    m = connect(server)
    yield m
    if m.connected:
        m.close_session()
