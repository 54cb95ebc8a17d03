"""The C path on real UDP sockets, inside a network namespace this test creates: the daemon's receive
path (mipha.runtime's virtual router: ha.transport, the engine, the binding journal) answers
registrations and bursts of renewals, interleaved with a corrupted, a replayed and a malformed one,
with the same replies (byte for byte), counters and journal records whether the renewals in place
are answered in C (recvmmsg/sendmmsg) or by the Python path (MIPHA_FASTPATH=0)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
import uuid
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from free_ports import free_port

from ha import fastpath
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
from mipha.journal import BindingJournal, records
from mipha.runtime import VirtualRouter

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces"),
]

SA = SecurityAssociation(256, bytes(range(16)))
NODES = 50
ROUNDS = 4
HOME = IPv4Address("10.51.0.0")
COA = IPv4Address("203.0.113.9")
HA = "127.0.0.1"
PORT = 434


def _request(node: int, identification: int) -> bytes:
    message = RegistrationRequest(
        RequestFlags.NONE,
        600,
        HOME + 1 + node,
        IPv4Address(HA),
        COA,
        identification,
        (MobileHomeAuth(SA.spi),),
    )
    return push_registration_request(message, sign={ExtensionType.MN_HA_AUTH: SA})


def _load(base: int) -> list[list[bytes]]:
    """Bursts: registrations, a renewal in place (remembered), then ROUNDS bursts of repeats, the
    second one with a corrupted, a replayed and a truncated request among them."""
    bursts = [[_request(i, base | (10 * i)) for i in range(NODES)]]
    for r in range(1, ROUNDS + 2):
        burst = [_request(i, base | (10 * i + r)) for i in range(NODES)]
        if r == 3:
            burst.insert(5, burst[4][:-1] + bytes([burst[4][-1] ^ 0x80]))  # corrupted: 131
            burst.insert(9, burst[7])  # the same request again (a retransmission)
            burst.insert(13, burst[11][:30])  # truncated: 134
        bursts.append(burst)
    return bursts


async def _replies(client: socket.socket, count: int) -> list[bytes]:
    """At least ``count`` replies, then whatever else comes until 0.2 s pass without one."""
    out: list[bytes] = []
    deadline = time.monotonic() + 30
    quiet = None
    while len(out) < count or time.monotonic() < quiet:
        assert time.monotonic() < deadline, f"{len(out)} of {count} replies"
        try:
            out.append(client.recv(2048))
            quiet = time.monotonic() + 0.2
        except BlockingIOError:
            await asyncio.sleep(0.005)
    return out


def _same_clock(bursts: list[list[bytes]]) -> list[list[bytes]]:
    """A 133's Identification carries the home agent's clock (RFC 5944 §5.7), its authenticator
    covers it: the runs' clocks differ, so a 133 is compared by its other bytes and low half."""
    return [sorted(d[:12] + d[16:20] if d[1] == 133 else d for d in burst) for burst in bursts]


def _run(
    netns: str, journal_path: Path, bursts: list[list[bytes]], expected: list[int]
) -> tuple[list, dict, int]:
    nodes = [
        MobileNode(f"mn{i}", home_address=HOME + 1 + i, security_associations=[SA]) for i in range(NODES)
    ]
    config = VirtualRouterConfig(
        "default",
        home_agent=HomeAgentConfig(address=IPv4Address(HA), udp_port=PORT),
        mobile_nodes=nodes,
        netns=netns,
    )
    journal = BindingJournal(journal_path)
    journal.load()
    journal.open()

    def client_socket() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HA, 0))
        sock.setblocking(False)
        return sock

    async def main() -> tuple[list, dict, int]:
        router = VirtualRouter(config, backend="none", journal=journal)
        await router.start()
        client = run_in_netns(netns, client_socket)
        got = []
        try:
            for burst, count in zip(bursts, expected, strict=True):
                for data in burst:
                    client.sendto(data, (HA, PORT))
                got.append(sorted(await _replies(client, count)))
            assert router.transport is not None and router.engine is not None
            return got, router.engine.statistics.as_dict(), router.transport.fast_hits
        finally:
            client.close()
            await router.stop()

    try:
        return asyncio.run(main())
    finally:
        journal.close()


def test_the_c_path_answers_real_udp_as_the_python_path(tmp_path: Path, monkeypatch) -> None:
    netns = f"mipha-fp-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        base = ntp_timestamp(time.time()) & ~0xFFFFFFFF
        bursts = _load(base)
        expected = [NODES] * len(bursts)  # at least one reply per node (more: the 131, the resent one)
        runs = {}
        for path in ("python", "c"):
            monkeypatch.setenv(fastpath.ENV, "0" if path == "python" else "1")
            runs[path] = _run(netns, tmp_path / f"{path}.journal", bursts, expected)
        (py_replies, py_stats, py_hits), (c_replies, c_stats, c_hits) = runs["python"], runs["c"]
        assert py_hits == 0
        assert c_hits >= (ROUNDS - 1) * NODES - 3  # every repeat but the corrupted and replayed ones
        assert _same_clock(c_replies) == _same_clock(py_replies)
        assert c_stats == py_stats
        codes = [pull_registration_reply(d).code for burst in c_replies for d in burst]
        assert codes.count(131) == 1 and set(codes) <= {0, 131, 133, 134}
        assert c_stats["accepted"] >= NODES * (ROUNDS + 2)
        for reply in (d for burst in c_replies for d in burst):
            if reply[1] == 0:  # an accepted reply carries the node's MN-HA authenticator
                assert SA.authenticator(reply[:-16]) == reply[-16:]

        def lines(path: str) -> list[dict]:
            found = records(tmp_path / f"{path}.journal")  # a "renewals" line: one "renew" per binding
            for record in found:
                record.pop("registered_at", None)
                record.pop("source_port")  # each run has its own client socket
            return found

        assert lines("c") == lines("python")
        assert [r["op"] for r in lines("c")].count("renew") == NODES * (ROUNDS + 1)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


def test_a_failing_batch_is_dropped_and_counted_and_the_loop_goes_on(
    tmp_path: Path, caplog, monkeypatch
) -> None:
    """A bug while the engine applies a C batch (here: renew_batch raising once) drops that batch,
    counts it and logs it with its traceback; the next repeats are all answered."""
    monkeypatch.setenv(fastpath.ENV, "1")
    nodes = [MobileNode(f"mn{i}", home_address=HOME + 1 + i, security_associations=[SA]) for i in range(4)]
    port = free_port()
    config = VirtualRouterConfig(
        "default", home_agent=HomeAgentConfig(address=IPv4Address(HA), udp_port=port), mobile_nodes=nodes
    )
    base = ntp_timestamp(time.time()) & ~0xFFFFFFFF

    async def main() -> tuple[int, int, int, int]:
        router = VirtualRouter(config, backend="none", journal=None)
        await router.start()
        assert router.engine is not None and router.transport is not None
        engine, transport = router.engine, router.transport
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind((HA, 0))
        client.setblocking(False)
        real = engine.renew_batch
        failures = [1]

        def failing(*args, **kwargs):
            if failures:
                failures.pop()
                raise RuntimeError("a bug")
            return real(*args, **kwargs)

        try:
            for r in range(2):  # registration (remembered), a repeat of it: answered in C
                for i in range(4):
                    client.sendto(_request(i, base | (10 * r + i)), (HA, port))
                await _replies(client, 4)
            engine.renew_batch = failing  # type: ignore[method-assign]
            for i in range(4):
                client.sendto(_request(i, base | (20 + i)), (HA, port))
            deadline = time.monotonic() + 10
            while transport.errors == 0:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            answered = []
            for r in (3, 4):
                for i in range(4):
                    client.sendto(_request(i, base | (10 * r + i)), (HA, port))
                answered.append(len(await _replies(client, 4)))
            return transport.errors, transport.fast_hits, answered[0], answered[1]
        finally:
            client.close()
            await router.stop()

    errors, hits, first, second = asyncio.run(main())
    assert errors == 1 and first == 4 and second == 4
    # the second round is C's; the round after the failure: C had run ahead of the engine for the 4
    # entries, so the engine refuses the first hit (its Python path answers it), and the pass realigns
    # the other 3, which C then answers; the next round is all C's
    assert hits == 4 + 3 + 4
    assert "C path batch dropped" in caplog.text and "RuntimeError: a bug" in caplog.text
