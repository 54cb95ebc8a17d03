"""Fixtures for tests/server: keys, hashes and real servers (helpers live in nc_server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
from nc_server import ADMIN, OPERATOR, ServerThread, connect, make_config
from ncclient import manager

from server.auth import hash_password


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


@pytest.fixture
def nc(server) -> Iterator[manager.Manager]:
    m = connect(server)
    yield m
    if m.connected:
        m.close_session()
