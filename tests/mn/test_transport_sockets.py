"""The transport's two sockets on one port: the HA's unicast address read with recvfrom/sendto, the
wildcard (broadcasts, other local addresses) with IP_PKTINFO — and every reply from the right source."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest
from mn_helpers import KEY_HEX, ThreadedHomeAgent, ip

from ha.engine.config import HomeAgentConfig, MobileNode, SecurityAssociation, VirtualRouterConfig
from ha.netns import run_in_netns
from ha.protocol import (
    ExtensionType,
    MobileHomeAuth,
    RegistrationRequest,
    RequestFlags,
    ntp_timestamp,
    pull_registration_reply,
    push_registration_request,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
KEY = bytes.fromhex(KEY_HEX)
HA = "127.0.0.1"
OTHER = "10.77.0.1"  # a second local address of the namespace (not the HA's)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"mipha-tp-{os.getpid():x}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", f"{OTHER}/32", "dev", "lo"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def request(ha: str, identification: int) -> bytes:
    message = RegistrationRequest(
        RequestFlags.NONE,
        60,
        ip("10.1.0.1"),
        ip(ha),
        ip("203.0.113.5"),
        identification,
        (MobileHomeAuth(256),),
    )
    return push_registration_request(message, sign={ExtensionType.MN_HA_AUTH: SecurityAssociation(256, KEY)})


def exchange(netns: str, data: bytes, destination: tuple[str, int]) -> tuple[bytes, tuple[str, int]]:
    def send() -> tuple[bytes, tuple[str, int]]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            client.bind(("127.0.0.1", 0))
            client.settimeout(5)
            client.sendto(data, destination)
            return client.recvfrom(2048)

    return run_in_netns(netns, send)


def test_unicast_broadcast_and_other_local_addresses(netns: str) -> None:
    node = MobileNode(
        "mn1", home_address=IPv4Address("10.1.0.1"), security_associations=[SecurityAssociation(256, KEY)]
    )
    config = VirtualRouterConfig(
        "default",
        home_agent=HomeAgentConfig(address=IPv4Address(HA), home_prefix=IPv4Network("127.0.0.0/8")),
        mobile_nodes=[node],
    )
    with ThreadedHomeAgent(config, address="0.0.0.0", netns=netns, unicast=HA) as ha:
        stamp = ntp_timestamp(time.time())
        data, source = exchange(netns, request(HA, stamp), (HA, ha.port))
        assert pull_registration_reply(data).code == 0 and source == (HA, ha.port)
        assert ha.call(lambda: (ha.transport.received, ha.transport.received_any)) == (1, 0), (
            "the kernel gives unicast traffic to the socket bound to the HA address"
        )

        data, source = exchange(netns, request("127.255.255.255", stamp + 1), ("127.255.255.255", ha.port))
        reply = pull_registration_reply(data)
        assert reply.code == 136 and reply.home_agent == ip(HA) and source == (HA, ha.port)

        data, source = exchange(netns, request(OTHER, stamp + 2), (OTHER, ha.port))
        assert pull_registration_reply(data).code == 136
        assert source == (OTHER, ha.port), "a reply leaves from the address its request was sent to"
        assert ha.call(lambda: (ha.transport.received, ha.transport.received_any)) == (3, 2)


def test_tunnel_data_is_not_truncated(netns: str) -> None:
    """RFC 3519 type-4 datagrams of any size reach the data plane whole, on either socket."""
    config = VirtualRouterConfig(
        "default",
        home_agent=HomeAgentConfig(address=IPv4Address(HA), home_prefix=IPv4Network("127.0.0.0/8")),
    )
    with ThreadedHomeAgent(config, address="0.0.0.0", netns=netns, unicast=HA) as ha:
        received: list[bytes] = []
        ha.call(lambda: setattr(ha.transport, "tunnel_data", lambda data, _source: received.append(data)))
        sizes = (1400, 2049, 4000, 9000, 65507)
        pattern = bytes([4, 4, 0, 0]) + bytes(range(256)) * 256
        sent = [pattern[:size] for size in sizes]
        assert [len(d) for d in sent] == list(sizes)

        def send() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.bind(("127.0.0.1", 0))
                for data in sent:
                    client.sendto(data, (HA, ha.port))  # the unicast socket
                    client.sendto(data, (OTHER, ha.port))  # the wildcard socket

        run_in_netns(netns, send)
        deadline = time.monotonic() + 20
        while ha.call(lambda: len(received)) < 2 * len(sizes) and time.monotonic() < deadline:
            time.sleep(0.05)
        got = ha.call(lambda: list(received))
        assert sorted(len(d) for d in got) == sorted(2 * list(sizes))
        assert all(d in sent for d in got), "every datagram arrives byte for byte"
