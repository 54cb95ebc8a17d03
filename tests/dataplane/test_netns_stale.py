"""A stale /run/netns/NAME (a file whose namespace mount is gone) never kills the daemon (issue 11, defect 8)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from ipaddress import IPv4Address

import pytest

from ha import netns
from ha.engine.config import HomeAgentConfig, VirtualRouterConfig
from mipha.runtime import VirtualRouter, VirtualRouterError


def _name(tag: str) -> str:
    return f"mt-{tag}-{os.getpid():x}{uuid.uuid4().hex[:6]}"


def _make_stale(name: str) -> None:
    """What a daemon run in a private mount namespace leaves behind: the file, without its mount."""
    subprocess.run(["umount", str(netns.NETNS_RUN_DIR / name)], check=True)
    assert netns.netns_is_stale(name) and not netns.netns_exists(name)


def test_a_stale_namespace_mipha_owns_is_recreated_and_usable():
    name = _name("own")
    try:
        assert netns.ensure_netns(name) is True
        _make_stale(name)
        assert netns.ensure_netns(name) is True  # recreated under the same name
        assert netns.netns_exists(name) and netns.is_owned(name)
        with netns.NetnsThread(name) as thread:  # enterable again
            assert thread.call(lambda: os.path.exists("/proc/self/ns/net"))
    finally:
        netns.release_netns(name)
    assert not (netns.NETNS_RUN_DIR / name).exists()


def test_a_stale_foreign_namespace_is_refused_naming_the_file_and_the_fix():
    name = _name("alien")
    path = netns.NETNS_RUN_DIR / name
    path.touch()  # a stale file mipha did not create
    try:
        with pytest.raises(netns.NetnsError) as refused:
            netns.ensure_netns(name)
        message = str(refused.value)
        assert str(path) in message and f"ip netns delete {name}" in message
        assert path.exists()  # left alone
        with pytest.raises(netns.NetnsError, match="stale network namespace file"):
            netns.NetnsThread(name)  # entering it explains itself too (no bare EINVAL)
    finally:
        path.unlink(missing_ok=True)


def test_a_virtual_router_on_a_stale_foreign_namespace_fails_with_a_virtual_router_error():
    """The daemon turns it into a NETCONF error for the commit (or a start-up refusal), not a crash."""
    name = _name("vr")
    path = netns.NETNS_RUN_DIR / name
    path.touch()
    config = VirtualRouterConfig(
        "blue", netns=name, home_agent=HomeAgentConfig(address=IPv4Address("192.0.2.1"))
    )
    vr = VirtualRouter(config, backend="none", journal=None)
    try:
        with pytest.raises(VirtualRouterError) as refused:
            asyncio.run(vr.start())
        assert str(path) in str(refused.value)
    finally:
        path.unlink(missing_ok=True)
