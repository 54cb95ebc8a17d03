"""A burst of registrations read in one wake-up, through the daemon's receive path (mipha.runtime's
virtual router: ha.transport, the engine, the binding journal) on real UDP sockets on loopback:
every request answered, in order per node, the burst journaled with one write *before* any reply
leaves, renewals in place journaled as short ``renew`` lines that replay to the renewed binding."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from ipaddress import IPv4Address
from pathlib import Path

from free_ports import free_port

from ha.engine.config import HomeAgentConfig, MobileNode, SecurityAssociation, VirtualRouterConfig
from ha.protocol import (
    ExtensionType,
    MobileHomeAuth,
    RegistrationRequest,
    RequestFlags,
    ntp_timestamp,
    pull_registration_reply,
    push_registration_request,
)
from mipha.journal import BindingJournal, records
from mipha.runtime import VirtualRouter

SA = SecurityAssociation(256, bytes(range(16)))
NODES = 40
HOME = IPv4Address("10.50.0.0")
COA = IPv4Address("203.0.113.9")


def _request(node: int, identification: int, lifetime: int) -> bytes:
    message = RegistrationRequest(
        RequestFlags.NONE,
        lifetime,
        HOME + 1 + node,
        IPv4Address("127.0.0.1"),
        COA,
        identification,
        (MobileHomeAuth(SA.spi),),
    )
    return push_registration_request(message, sign={ExtensionType.MN_HA_AUTH: SA})


async def _replies(client: socket.socket, count: int) -> list[bytes]:
    out: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(out) < count:
        assert time.monotonic() < deadline, f"{len(out)} of {count} replies"
        try:
            out.append(client.recv(2048))
        except BlockingIOError:
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # nothing more comes
    try:
        extra = client.recv(2048)
    except BlockingIOError:
        extra = None
    assert extra is None, "more replies than requests"
    return out


def test_a_burst_is_journaled_once_before_its_replies_and_renewals_replay(tmp_path: Path) -> None:
    port = free_port()
    nodes = [
        MobileNode(f"mn{i}", home_address=HOME + 1 + i, security_associations=[SA]) for i in range(NODES)
    ]
    config = VirtualRouterConfig(
        "default",
        home_agent=HomeAgentConfig(address=IPv4Address("127.0.0.1"), udp_port=port),
        mobile_nodes=nodes,
    )
    path = tmp_path / "bindings.journal"
    journal = BindingJournal(path)
    journal.load()
    journal.open()
    order: list[tuple[str, int]] = []  # what left the process, in order: journal writes, reply sends
    write = journal._append
    journal._append = lambda lines: (order.append(("journal", len(lines))), write(lines))[1]
    base = ntp_timestamp(time.time()) & ~0xFFFFFFFF

    async def main() -> list[list[bytes]]:
        router = VirtualRouter(config, backend="none", journal=journal)
        await router.start()
        transport = router.transport
        send_all = transport._send_all
        transport._send_all = lambda replies: (order.append(("send", len(replies))), send_all(replies))[1]
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        bursts = []
        try:
            # Burst 1: every node registers, then renews at once (the loop is not running while
            # these are sent: the transport finds all of them queued at its first wake-up).
            for i in range(NODES):
                client.sendto(_request(i, base | (2 * i), 300), ("127.0.0.1", port))
                client.sendto(_request(i, base | (2 * i + 1), 600), ("127.0.0.1", port))
            bursts.append(await _replies(client, 2 * NODES))
            # Burst 2: renewals only, in place.
            for i in range(NODES):
                client.sendto(_request(i, base | (1000 + i), 900), ("127.0.0.1", port))
            bursts.append(await _replies(client, NODES))
            assert transport.bursts == 2 and transport.received == 3 * NODES
            assert router.engine.statistics.accepted == 3 * NODES
        finally:
            client.close()
            await router.stop()
        return bursts

    first, second = asyncio.run(main())
    journal.close()
    # Everything answered 0, in order per node (each node's reply to its older request first).
    replies = [pull_registration_reply(data) for data in first]
    assert {r.code for r in replies} == {0}
    for i in range(NODES):
        mine = [r.identification & 0xFFFFFFFF for r in replies if r.home_address == HOME + 1 + i]
        assert mine == [2 * i, 2 * i + 1]
    assert {pull_registration_reply(d).code for d in second} == {0}
    # One journal write per burst, each before the burst's replies leave (the first: an "add" line per
    # binding; the second: the renewals in place, one "renewals" line).
    assert order == [("journal", NODES), ("send", 2 * NODES), ("journal", 1), ("send", NODES)]
    lines = [json.loads(line) for line in path.read_bytes().splitlines()]
    # Registered and renewed in one burst: one "add" with the renewal's values; then the second
    # burst's renewals in place, one "renewals" line (one record per binding).
    assert [line["op"] for line in lines] == ["add"] * NODES + ["renewals"]
    lines = records(path)
    assert [line["op"] for line in lines] == ["add"] * NODES + ["renew"] * NODES
    assert {line["lifetime"] for line in lines[:NODES]} == {600}
    assert set(lines[NODES]) == {
        "op",
        "vr",
        "home_address",
        "care_of_address",
        "source_address",
        "source_port",
        "lifetime",
        "registered_at",
        "identification",
        "flags",
        "ha_nonce",  # (None: timestamps)
    }
    assert lines[NODES]["ha_nonce"] is None
    # A restart rebuilds every binding as renewed last.
    again = BindingJournal(path).load()
    assert len(again) == NODES
    for i in range(NODES):
        record = again[("default", str(HOME + 1 + i), str(COA))]
        assert (record.lifetime, record.identification) == (900, base | (1000 + i))
        assert (record.mobile_node, record.encapsulation, record.source_address) == (
            f"mn{i}",
            "ip-in-ip",
            "127.0.0.1",
        )
