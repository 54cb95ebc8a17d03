"""Pipelined replication keeps every binding's order, and its transactions go to etcd's Raft leader.

The replicator has up to MAX_IN_FLIGHT batches in etcd at once; a batch holding a key that is still
in flight waits for the batches before it.  Against a real 3-member etcd cluster this checks that
batches really were in flight together but never two holding the same key; from etcd's own history
of the keys (a watch from the first revision), that the writes to each key landed in the order they
were submitted; that no submitter was released before one that submitted earlier (a reply never
acknowledges ahead of an earlier write); and that the transactions reached the member that is the
Raft leader, counted by the members themselves (``grpc_server_handled_total``), before and after
the leadership moved (``etcdctl move-leader``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
from aetcd import rpc
from aetcd.utils import prefix_range_end
from etcd_cluster import EtcdCluster, Member

from mipha.journal import BindingRecord
from mipha.redundancy import Member as GroupMember
from mipha.redundancy import RedundancyConfig

pytestmark = pytest.mark.slow

HOMES = 48
ROUNDS = 120
PREFIX = b"/mipha/order/bindings/"


def txns_handled(m: Member) -> int:
    """Txn calls the member answered, whatever their outcome (its own count, one line per code)."""
    text = urllib.request.urlopen(f"{m.endpoint}/metrics", timeout=5).read().decode()
    found = re.findall(r'^grpc_server_handled_total\{[^}]*grpc_method="Txn"[^}]*\} (\S+)$', text, re.M)
    assert found, "etcd exports no grpc_server_handled_total for Txn"
    return sum(int(float(n)) for n in found)


def move_leader(etcd: EtcdCluster, to: Member) -> None:
    status = json.loads(etcd.ctl("endpoint", "status", "-w", "json"))
    ids = {int(e["Endpoint"].rsplit(":", 1)[1]): e["Status"]["header"]["member_id"] for e in status}
    leader = etcd.leader()
    etcd.ctl("move-leader", format(ids[to.client_port], "x"), endpoints=[leader.endpoint])


def homes_of(round_: int) -> list[int]:
    """Round r writes a quarter of the homes (consecutive rounds: disjoint key sets, so they fly
    together), and every seventh round home 0 as well (a key still in flight: it must wait)."""
    homes = [h for h in range(HOMES) if h % 4 == round_ % 4]
    return homes if round_ % 7 or 0 in homes else [0, *homes]


async def revision(member: GroupMember) -> int:
    return (await member.client.maintenancestub.Status(rpc.StatusRequest(), timeout=5)).header.revision


async def history(member: GroupMember, start: int, end: int) -> dict[bytes, list[int]]:
    """Each key's values (the round, kept in ``identification``) in etcd's order, revisions start..end."""
    client = member.client
    create = rpc.WatchCreateRequest(key=PREFIX, range_end=prefix_range_end(PREFIX), start_revision=start)

    async def requests():
        yield rpc.WatchRequest(create_request=create)
        await asyncio.get_running_loop().create_future()

    call = rpc.WatchStub(client.channel).Watch(requests())
    seen: dict[bytes, list[int]] = {}
    try:
        async for response in call:
            for event in response.events:  # (one transaction's events share a revision)
                seen.setdefault(event.kv.key, []).append(json.loads(event.kv.value)["identification"])
            if response.events and response.events[-1].kv.mod_revision >= end:
                return seen
    finally:
        call.cancel()
    return seen


async def stream(member: GroupMember, first: int, last: int, released: list[int]) -> None:
    """Submit rounds first..last-1 without waiting for etcd (one per event-loop turn, as bursts
    arrive), each released in ``released`` when the replicator says it is in etcd."""
    futures = []
    for r in range(first, last):
        records = [
            BindingRecord("vr", f"10.9.0.{h}", "192.0.2.9", "mn", "192.0.2.9", 434, 600, time.time(), r, 0, "ipip")
            for h in homes_of(r)
        ]  # fmt: skip
        future = member.replicator.submit(records)
        future.add_done_callback(lambda f, r=r: released.append(r))
        futures.append(future)
        await asyncio.sleep(0)  # the replicator starts a batch; its transaction takes far longer
    await asyncio.gather(*futures)


def test_pipelined_replication_keeps_each_bindings_order_and_goes_to_the_leader(tmp_path: Path) -> None:
    etcd = EtcdCluster(tmp_path / "etcd", extra=["--metrics=extensive"])
    with etcd.running():
        eps = tuple(("127.0.0.1", m.client_port) for m in etcd.members)

        async def nothing(_: object) -> None:
            return None

        async def scenario() -> None:
            member = GroupMember(
                RedundancyConfig(eps, "order", "a", 2), on_active=nothing, on_standby=nothing
            )
            await member.start()
            deadline = time.monotonic() + 20
            while not member.token:
                assert time.monotonic() < deadline, "the member did not become active"
                await asyncio.sleep(0.05)
            start = await revision(member) + 1
            replicator = member.replicator
            released: list[int] = []
            # The batches' own writes to etcd are watched (and still made): no key in two at once.
            flying: set[bytes] = set()
            overlaps: list[set[bytes]] = []
            write = replicator._write

            async def watched(batch: dict[bytes, bytes | None]) -> None:
                keys = set(batch)
                if keys & flying:
                    overlaps.append(keys & flying)
                flying.update(keys)
                try:
                    await write(batch)
                finally:
                    flying.difference_update(keys)

            replicator._write = watched  # type: ignore[method-assign]

            leader = await asyncio.to_thread(etcd.leader)
            await stream(member, 0, 4, released)  # the first answer says which term: the route looks
            deadline = time.monotonic() + 10
            while replicator.route.leader != ("127.0.0.1", leader.client_port):
                assert time.monotonic() < deadline, f"route {replicator.route.leader}, leader {leader.name}"
                await asyncio.sleep(0.02)
            handled = await asyncio.to_thread(lambda: {m.name: txns_handled(m) for m in etcd.members})
            sent, unrouted, retries = replicator.transactions, replicator.unrouted, replicator.retries
            await stream(member, 4, ROUNDS // 2, released)
            after = await asyncio.to_thread(lambda: {m.name: txns_handled(m) for m in etcd.members})
            # (a transaction whose outcome was unknown sends the next ones to any member until the
            # route has looked again: on a quiet box none)
            unrouted = replicator.unrouted - unrouted
            assert not unrouted or replicator.retries > retries, "sent to any member with no failure"
            assert after[leader.name] - handled[leader.name] >= replicator.transactions - sent - unrouted
            others = sum(after[m.name] - handled[m.name] for m in etcd.members if m is not leader)
            assert others <= unrouted, f"followers handled {others} transactions: {handled} -> {after}"

            target = next(m for m in etcd.members if m is not leader)
            await asyncio.to_thread(move_leader, etcd, target)
            await stream(member, ROUNDS // 2, ROUNDS, released)
            deadline = time.monotonic() + 10
            while replicator.route.leader != ("127.0.0.1", target.client_port):
                assert time.monotonic() < deadline, f"route {replicator.route.leader}, leader {target.name}"
                await stream(member, ROUNDS, ROUNDS + 1, released)  # (rewrites round ROUNDS only)
                await asyncio.sleep(0.05)

            print(f"{replicator.transactions} transactions, at most {replicator.peak_in_flight} in flight")
            assert replicator.peak_in_flight > 1, "no two batches were ever in flight: nothing tested"
            assert not overlaps, f"a key was in two batches in flight at once: {overlaps[:3]}"
            assert released == sorted(released), "a submitter was released before an earlier one"
            end = await revision(member)
            seen = await history(member, start, end)
            for h in range(HOMES):
                key = PREFIX + f"vr/10.9.0.{h}/192.0.2.9".encode()
                wrote = [r for r in range(ROUNDS) if h in homes_of(r)]
                landed = [r for r in seen.get(key, []) if r < ROUNDS]
                assert landed == sorted(landed), f"home {h}: etcd holds its writes out of order: {landed}"
                # (writes to one key queued together collapse to the last: not every round lands)
                assert set(landed) <= set(wrote) and landed[-1] == wrote[-1], f"home {h}: {landed}"
            await member.stop()

        asyncio.run(asyncio.wait_for(scenario(), 90))
