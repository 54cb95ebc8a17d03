"""End to end over UDP loopback: engine + transport + ``mipha mn`` as a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from ipaddress import IPv4Address, IPv4Network

import pytest
from mn_helpers import KEY_HEX, ThreadedHomeAgent, ip, mipha_mn

from ha.engine.config import AddressPool, HomeAgentConfig, MobileNode, VirtualRouterConfig
from ha.protocol import (
    ExtensionType,
    MobileHomeAuth,
    RegistrationRequest,
    RequestFlags,
    SecurityAssociation,
    ntp_timestamp,
    pull_registration_reply,
    push_registration_request,
)
from ha.protocol.constants import AuthAlgorithm, ReplayProtection

KEY = bytes.fromhex(KEY_HEX)
HOME = "10.1.0.1"


def config(
    *, replay: ReplayProtection = ReplayProtection.TIMESTAMP, count: int = 1, **ha
) -> VirtualRouterConfig:
    sas = [SecurityAssociation(256, KEY, replay_protection=replay)]
    nodes = [
        MobileNode(f"mn{i}", home_address=IPv4Address(HOME) + i - 1, security_associations=sas)
        for i in range(1, count + 1)
    ]
    pool = AddressPool("pool", ((IPv4Address("10.2.0.1"), IPv4Address("10.2.0.200")),))
    nodes.append(MobileNode("dyn", address_pool="pool", nai="dyn@example.net", security_associations=sas))
    ha.setdefault("address", IPv4Address("127.0.0.1"))
    return VirtualRouterConfig(
        "default", home_agent=HomeAgentConfig(**ha), address_pools=[pool], mobile_nodes=nodes
    )


def test_register_reregister_handover_deregister_in_separate_runs():
    with ThreadedHomeAgent(config()) as ha:
        out = mipha_mn(ha.port, "register", "--home", HOME, "--coa", "203.0.113.5")
        assert out["ok"] and out["steps"][0]["code"] == 0 and out["steps"][0]["authenticated"]
        assert ha.call(lambda: [str(b.care_of_address) for b in ha.engine.bindings_of(ip(HOME))]) == [
            "203.0.113.5"
        ]
        assert mipha_mn(ha.port, "reregister", "--home", HOME, "--coa", "203.0.113.5")["ok"]
        assert mipha_mn(ha.port, "handover", "--home", HOME, "--coa", "203.0.113.9")["ok"]
        assert ha.call(lambda: [str(b.care_of_address) for b in ha.engine.bindings_of(ip(HOME))]) == [
            "203.0.113.9"
        ]
        assert mipha_mn(ha.port, "deregister", "--home", HOME, "--all")["ok"]
        assert ha.call(lambda: ha.engine.binding_count) == 0
        stats = ha.call(lambda: ha.engine.statistics.as_dict())
        assert (stats["accepted"], stats["replies-sent"], stats["deregistrations-received"]) == (4, 4, 1)
        kinds = [type(i).__name__ for i in ha.call(lambda: list(ha.intents))]
        assert kinds[:4] == ["EnsureTunnel", "SetHomeRoute", "ProxyArp", "GratuitousArp"]
        assert kinds[-1] == "GratuitousArp"


def test_sequence_with_nai_dynamic_address_and_nonces():
    with ThreadedHomeAgent(config(replay=ReplayProtection.NONCE)) as ha:
        out = mipha_mn(
            ha.port, "sequence", "--nai", "dyn@example.net", "--coa", "203.0.113.5", "--coa2", "203.0.113.6",
            extra=("--replay", "nonce"),
        )  # fmt: skip
        steps = {s["step"]: s for s in out["steps"]}
        assert out["ok"], out
        assert (
            steps["register"]["home_address"] == "10.2.0.1" and steps["register"]["nai"] == "dyn@example.net"
        )
        assert steps["register"]["attempts"] == 2  # the first request learns the HA nonce (133)
        assert steps["handover"]["code"] == 0 and steps["deregister"]["lifetime"] == 0
        assert ha.call(lambda: (ha.engine.binding_count, ha.engine.pool_usage("pool").in_use)) == (0, 0)


def test_wrong_key_is_denied_131_and_reported():
    with ThreadedHomeAgent(config()) as ha:
        command_key = "ff" * 16  # the home agent knows another key
        done = subprocess.run(
            [sys.executable, "-m", "mipha.cli", "mn", "--ha", "127.0.0.1", "--port", str(ha.port), "--key",
             command_key, "--bind", "127.0.0.1", "--timeout", "0.3", "--retries", "0", "--json",
             "register", "--home", HOME, "--coa", "203.0.113.5"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )  # fmt: skip
        result = json.loads(done.stdout)
        assert done.returncode == 1 and not result["ok"]
        assert result["steps"][0]["code"] == 131 and not result["steps"][0]["authenticated"]
        assert ha.call(lambda: ha.engine.statistics.mn_auth_failures) == 1


def test_load_of_many_nodes_all_accepted():
    with ThreadedHomeAgent(config(count=200)) as ha:
        out = mipha_mn(
            ha.port, "load", "--count", "200", "--home-start", HOME, "--coa", "203.0.113.5",
            "--rate", "2000", "--duration", "1.0",
        )  # fmt: skip
        assert out["timeouts"] == 0 and out["denied"] == {}
        # Every node registered at least once (then renewed while time was left), all accepted.
        assert out["accepted"] == out["transactions"] >= 200
        assert out["latency_ms"]["p50"] is not None
        assert ha.call(lambda: ha.engine.binding_count) == 200


def test_transport_survives_garbage_and_answers_malformed():
    with ThreadedHomeAgent(config()) as ha:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.bind(("127.0.0.1", 0))
            sock.sendto(b"", ("127.0.0.1", ha.port))
            sock.sendto(b"\x01\x02", ("127.0.0.1", ha.port))
            request = RegistrationRequest(
                RequestFlags.NONE, 60, ip(HOME), ip("127.0.0.1"), ip("203.0.113.5"), ntp_timestamp(1.8e9),
                (MobileHomeAuth(256),),
            )  # fmt: skip
            data = push_registration_request(
                request, sign={ExtensionType.MN_HA_AUTH: SecurityAssociation(256, KEY)}
            )
            sock.sendto(data[:-2], ("127.0.0.1", ha.port))  # bad extension length -> 134
            reply, source = sock.recvfrom(2048)
            assert pull_registration_reply(reply).code == 134 and source == ("127.0.0.1", ha.port)
        stats = ha.call(lambda: ha.engine.statistics.as_dict())
        assert stats["discarded"] == 2 and stats["poorly-formed"] == 1
        assert ha.transport.errors == 0


@pytest.fixture
def netns():
    name = f"mipha-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.netns
def test_broadcast_discovery_in_a_namespace_is_answered_136_from_the_unicast_address(netns):
    cfg = config(address=IPv4Address("127.0.0.1"), home_prefix=IPv4Network("127.0.0.0/8"))
    with ThreadedHomeAgent(cfg, address="0.0.0.0", netns=netns) as ha:
        from ha.transport import open_udp_socket

        client = open_udp_socket("127.0.0.1", 0, netns)
        try:
            client.setblocking(True)
            client.settimeout(5)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            request = RegistrationRequest(
                RequestFlags.NONE, 60, ip(HOME), ip("127.255.255.255"), ip("203.0.113.5"),
                ntp_timestamp(time.time()),  # authentic and fresh: 136 comes after both checks
                (MobileHomeAuth(256),),
            )  # fmt: skip
            sign = {ExtensionType.MN_HA_AUTH: SecurityAssociation(256, KEY)}
            client.sendto(push_registration_request(request, sign=sign), ("127.255.255.255", ha.port))
            data, source = client.recvfrom(2048)
        finally:
            client.close()
        reply = pull_registration_reply(data)
        assert reply.code == 136 and reply.home_agent == ip("127.0.0.1")
        assert source[0] == "127.0.0.1"
        assert ha.call(lambda: ha.engine.binding_count) == 0


def test_expiry_is_driven_by_the_transport_timer():
    with ThreadedHomeAgent(config()) as ha:
        assert mipha_mn(
            ha.port, "register", "--home", HOME, "--coa", "203.0.113.5", extra=("--lifetime", "1")
        )["ok"]
        removed = threading.Event()

        def watch() -> None:
            if ha.engine.binding_count == 0:
                removed.set()
            else:
                ha.loop.call_later(0.05, watch)

        ha.loop.call_soon_threadsafe(watch)
        assert removed.wait(30), "the binding never expired"
        kinds = [type(i).__name__ for i in ha.call(lambda: list(ha.intents))]
        assert kinds[-3:] == ["RemoveHomeRoute", "ReleaseTunnel", "ProxyArp"]


def test_an_engine_exception_never_reaches_the_loop():
    with ThreadedHomeAgent(config()) as ha:
        real = ha.engine.handle_datagram
        calls = []

        def flaky(data, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("boom")
            return real(data, **kwargs)

        ha.engine.handle_datagram = flaky  # type: ignore[method-assign]
        first = mipha_mn(
            ha.port, "register", "--home", HOME, "--coa", "203.0.113.5", extra=("--timeout", "2")
        )
        assert first["ok"] and first["steps"][0]["attempts"] == 2  # the first request was dropped
        assert ha.transport.errors == 1
        assert ha.call(lambda: ha.engine.statistics.discarded) == 1


def test_keyed_md5_node_registers_end_to_end():
    sas = [SecurityAssociation(256, KEY, AuthAlgorithm.KEYED_MD5_PREFIX_SUFFIX)]
    cfg = VirtualRouterConfig(
        "default",
        home_agent=HomeAgentConfig(address=IPv4Address("127.0.0.1")),
        mobile_nodes=[MobileNode("k", home_address=IPv4Address(HOME), security_associations=sas)],
    )
    with ThreadedHomeAgent(cfg) as ha:
        keyed = ("--algorithm", "keyed-md5-prefix-suffix")
        out = mipha_mn(
            ha.port, "sequence", "--home", HOME, "--coa", "203.0.113.5", "--coa2", "203.0.113.6", extra=keyed
        )
        assert out["ok"] and [s["code"] for s in out["steps"]] == [0, 0, 0, 0]
        assert all(s["authenticated"] for s in out["steps"])


def test_load_with_nai_nodes_gets_pool_addresses():
    sas = [SecurityAssociation(256, KEY)]
    nodes = [
        MobileNode(f"n{i}", address_pool="pool", nai=f"n{i}@example.net", security_associations=sas)
        for i in range(1, 41)
    ]
    pool = AddressPool("pool", ((IPv4Address("10.2.0.1"), IPv4Address("10.2.0.30")),))
    cfg = VirtualRouterConfig(
        "default",
        home_agent=HomeAgentConfig(address=IPv4Address("127.0.0.1")),
        address_pools=[pool],
        mobile_nodes=nodes,
    )
    with ThreadedHomeAgent(cfg) as ha:
        out = mipha_mn(
            ha.port, "load", "--count", "40", "--nai-pattern", "n{i}@example.net", "--coa", "203.0.113.5",
            "--rate", "400", "--duration", "0.3",
        )  # fmt: skip
        assert out["timeouts"] == 0
        # 30 addresses for 40 nodes: the last 10 nodes are refused with 130 on every attempt.
        assert out["denied"] == {"130": out["codes"]["130"]} and out["codes"]["130"] >= 10
        assert ha.call(lambda: (ha.engine.binding_count, ha.engine.pool_usage("pool").free)) == (30, 0)


def test_open_udp_socket_in_a_missing_namespace_raises_in_the_caller():
    from ha.transport import open_udp_socket

    with pytest.raises(OSError):
        open_udp_socket("127.0.0.1", 0, f"mipha-missing-{uuid.uuid4().hex[:8]}")
