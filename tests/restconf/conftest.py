"""Fixtures for tests/restconf: a NETCONF + RESTCONF server on one core, ncclient to it."""

from __future__ import annotations

import sys
from pathlib import Path

import asyncssh
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notif_receiver import Receiver, make_pki
from rc_server import ADMIN, OPERATOR, RestconfServer, make_config

from server.auth import hash_password


@pytest.fixture(scope="session")
def rc_hashes() -> dict[str, str]:
    return {ADMIN[0]: hash_password(ADMIN[1], n_log2=10), OPERATOR[0]: hash_password(OPERATOR[1], n_log2=10)}


@pytest.fixture(scope="session")
def rc_pub() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()


@pytest.fixture
def rc(tmp_path, rc_hashes, rc_pub):
    srv = RestconfServer(make_config(tmp_path / "state", tmp_path / "hostkey", rc_hashes, rc_pub))
    yield srv
    srv.stop()


@pytest.fixture
def rc_factory(tmp_path, rc_hashes, rc_pub):
    started = []

    def make():
        d = tmp_path / f"s{len(started)}"
        srv = RestconfServer(make_config(d / "state", d / "hostkey", rc_hashes, rc_pub))
        started.append(srv)
        return srv

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def pki(tmp_path):
    """A test CA, the HTTPS receivers' certificates and mipha's client certificate."""
    return make_pki(tmp_path / "pki")


@pytest.fixture
def receiver(pki):
    """A real HTTPS-notif receiver (aiohttp over TLS, requiring mipha's client certificate)."""
    r = Receiver(pki)
    yield r
    r.close()
