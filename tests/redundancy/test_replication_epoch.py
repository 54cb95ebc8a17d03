"""A replication transaction whose outcome was unknown cannot land after what was written after it.

The replicator sends such a transaction again, and the next batch writing one of its keys waits for
that retry.  But etcd may still hold the first attempt and apply it later (a request that reached a
member is not withdrawn by the client's deadline).  Every replication transaction compares the
leader key's mod revision (the *epoch*), and before a retry the replicator moves it by putting the
leader key again, so the late first attempt finds another revision and writes nothing
(docs/redundancy.md, *A transaction whose outcome is unknown*).

Against a real 3-member etcd cluster, a :class:`Wire` stands between the member and etcd (it wraps
the KV stubs the replicator sends on): it keeps the exact ``TxnRequest`` of a first attempt and
answers DEADLINE_EXCEEDED as a lost answer would; after the retry and a newer write of the same key
completed, the test delivers the kept request to etcd itself.  Also: an attempt applied whose answer
was lost; a batch in flight with the old epoch, refused and sent again; the standby's mirror; and a
deposed leader, fenced, while the new one writes with its own epoch.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
from aetcd import rpc
from etcd_cluster import EtcdCluster

from mipha.journal import BindingRecord
from mipha.redundancy import Fenced, Member, Mirror, RedundancyConfig

pytestmark = pytest.mark.slow

TTL = 2
ROOT = "/mipha/epoch/"
Send = Callable[[], Awaitable[rpc.TxnResponse]]


class _Stub:
    """A KV stub whose Txn goes through the wire's hook (everything else is the real stub's)."""

    def __init__(self, inner, wire: Wire) -> None:
        self.inner = inner
        self.wire = wire

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def Txn(self, request: rpc.TxnRequest, *args, **kwargs) -> rpc.TxnResponse:
        async def send() -> rpc.TxnResponse:
            return await self.inner.Txn(request, *args, **kwargs)

        hook = self.wire.hook
        return await (send() if hook is None else hook(request, send))


class Wire:
    """Between a member and etcd: ``hook(request, send)`` sees every transaction the member sends, on
    the leader's channel and on the shared one; ``direct`` is the shared channel's own stub."""

    def __init__(self, member: Member) -> None:
        self.hook: Callable[[rpc.TxnRequest, Send], Awaitable[rpc.TxnResponse]] | None = None
        self.direct = member.client.kvstub
        member.client.kvstub = _Stub(self.direct, self)
        route = member.replicator.route
        leader = route.stub
        route.stub = lambda: (lambda s: None if s is None else _Stub(s, self))(leader())  # type: ignore[method-assign]


def lost() -> grpc.aio.AioRpcError:
    """What the replicator sees when an answer does not come in time."""
    return grpc.aio.AioRpcError(
        grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), "held by the test"
    )


def copy(request: rpc.TxnRequest) -> rpc.TxnRequest:
    kept = rpc.TxnRequest()
    kept.CopyFrom(request)
    return kept


def key(home: str) -> bytes:
    return f"{ROOT}bindings/vr/{home}/192.0.2.7".encode()


def record(home: str, identification: int) -> BindingRecord:
    return BindingRecord(
        "vr", home, "192.0.2.7", "mn", "192.0.2.7", 434, 600, time.time(), identification, 0, "ipip"
    )


def writes(request: rpc.TxnRequest) -> dict[bytes, int]:
    """The binding records a transaction puts, as key -> Identification."""
    return {
        op.request_put.key: json.loads(op.request_put.value)["identification"]
        for op in request.success
        if op.HasField("request_put") and op.request_put.value
    }


async def stored(member: Member, home: str) -> int | None:
    kv = await member.client.get(key(home))
    return None if kv is None else json.loads(kv.value)["identification"]


async def until(check: Callable[[], object], timeout: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.01)


def member(etcd: EtcdCluster, node: str) -> Member:
    async def nothing(_: object) -> None:
        return None

    eps = tuple(("127.0.0.1", m.client_port) for m in etcd.members)
    return Member(RedundancyConfig(eps, "epoch", node, TTL), on_active=nothing, on_standby=nothing)


async def active(etcd: EtcdCluster, node: str) -> Member:
    m = member(etcd, node)
    await m.start()
    await until(lambda: m.token, 20, f"{node} to become active")
    return m


def test_a_first_attempt_applied_late_cannot_overwrite_a_newer_value(etcd: EtcdCluster) -> None:
    async def scenario() -> None:
        a = await active(etcd, "a")
        b = member(etcd, "b")
        await b.start()
        mirror = Mirror(b)  # b's standby copy, following etcd's watch
        mirror.start()
        wire = Wire(a)
        held: list[rpc.TxnRequest] = []  # first attempts kept from etcd
        answered: list[rpc.TxnRequest] = []  # first attempts applied, their answers lost

        async def hook(request: rpc.TxnRequest, send: Send) -> rpc.TxnResponse:
            homes = writes(request)
            if key("10.7.0.1") in homes and not held:
                held.append(copy(request))
                raise lost()
            if key("10.7.0.2") in homes and not answered:
                answered.append(copy(request))
                await send()
                raise lost()
            return await send()

        wire.hook = hook
        await asyncio.wait_for(a.replicator.submit([record("10.7.0.1", 1)]), 10)
        assert held and writes(held[0]) == {key("10.7.0.1"): 1}, "the first attempt was not kept"
        await asyncio.wait_for(a.replicator.submit([record("10.7.0.1", 2)]), 10)
        assert await stored(a, "10.7.0.1") == 2
        # etcd applies the first attempt only now, after its retry and the newer write
        late = await wire.direct.Txn(held[0], timeout=5)
        assert await stored(a, "10.7.0.1") == 2, "the late first attempt overwrote the newer value"
        assert not late.succeeded
        assert a.token and a.replicator.bumps >= 1
        bumps = a.replicator.bumps

        # A first attempt that etcd applied, its answer lost: the retry (a new epoch) lands as well.
        await asyncio.wait_for(a.replicator.submit([record("10.7.0.2", 1)]), 10)
        await asyncio.wait_for(a.replicator.submit([record("10.7.0.2", 2)]), 10)
        assert answered and await stored(a, "10.7.0.2") == 2
        assert not (await wire.direct.Txn(answered[0], timeout=5)).succeeded
        assert await stored(a, "10.7.0.2") == 2
        assert a.token and a.replicator.bumps > bumps

        # The standby follows: the leader key's puts are no binding; its copy holds the newer values.
        def mirrored() -> bool:
            got = {h: mirror.records.get(key(h)) for h in ("10.7.0.1", "10.7.0.2")}
            return all(r is not None and r.identification == 2 for r in got.values())

        await until(mirrored, what="the standby's copy of the newer values")
        await mirror.stop()

        # A deposed leader is fenced (the key it moved is gone); the new one writes with its own epoch.
        await a.client.delete(a.leader_key)
        with pytest.raises(Fenced):
            await asyncio.wait_for(a.replicator.submit([record("10.7.0.1", 3)]), 10)
        assert a.token == 0
        await until(lambda: b.token, 20, "b to take over")
        await asyncio.wait_for(b.replicator.submit([record("10.7.0.1", 4)]), 10)
        assert await stored(b, "10.7.0.1") == 4
        assert not (await wire.direct.Txn(held[0], timeout=5)).succeeded
        assert await stored(b, "10.7.0.1") == 4
        await a.stop()
        await b.stop()

    asyncio.run(asyncio.wait_for(scenario(), 90))


def test_a_batch_in_flight_when_the_epoch_moves_is_sent_again(etcd: EtcdCluster) -> None:
    async def scenario() -> None:
        a = await active(etcd, "a")
        wire = Wire(a)
        held: list[rpc.TxnRequest] = []
        flying: list[rpc.TxnRequest] = []  # the other batch's first attempt, sent after the move
        answers: list[rpc.TxnResponse] = []

        async def hook(request: rpc.TxnRequest, send: Send) -> rpc.TxnResponse:
            homes = writes(request)
            if key("10.7.1.1") in homes and not held:
                held.append(copy(request))
                await until(lambda: flying, what="the second batch's attempt")  # both in flight
                raise lost()
            if key("10.7.1.2") in homes and not flying:
                flying.append(copy(request))
                await until(lambda: a.replicator.bumps, what="the epoch to move")
                answers.append(await send())
                return answers[-1]
            return await send()

        wire.hook = hook
        first = a.replicator.submit([record("10.7.1.1", 1)])
        await asyncio.sleep(0)  # its batch starts; the next one holds another key: they fly together
        second = a.replicator.submit([record("10.7.1.2", 1)])
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert flying[0].compare[0].mod_revision == held[0].compare[0].mod_revision, "not one epoch"
        assert answers and not answers[0].succeeded, "the old epoch's attempt was not refused"
        assert a.replicator.resent >= 1 and a.token, "refused by the epoch, yet not sent again"
        assert await stored(a, "10.7.1.1") == 1 and await stored(a, "10.7.1.2") == 1
        assert not (await wire.direct.Txn(held[0], timeout=5)).succeeded
        await a.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_configuration_digest_applied_late_cannot_overwrite_a_newer_one(etcd: EtcdCluster) -> None:
    """The active member's configuration digest goes through the replicator too: sent until etcd has
    it, and a first attempt applied late cannot bring back an older digest (which would block a
    standby that agrees with the newer one, or let one take over that does not)."""

    async def scenario() -> None:
        a = await active(etcd, "a")
        wire = Wire(a)
        held: list[rpc.TxnRequest] = []

        async def hook(request: rpc.TxnRequest, send: Send) -> rpc.TxnResponse:
            puts = [op.request_put.key for op in request.success if op.HasField("request_put")]
            if a.config_key in puts and not held:
                held.append(copy(request))
                raise lost()
            return await send()

        wire.hook = hook
        a.config_digest = "d1"
        await asyncio.wait_for(a.publish_config(), 10)
        assert held, "the first attempt was not kept"
        a.config_digest = "d2"
        await asyncio.wait_for(a.publish_config(), 10)
        assert not (await wire.direct.Txn(held[0], timeout=5)).succeeded
        assert (await a.client.get(a.config_key)).value == b"d2"
        assert a.status.config_agrees is True
        await a.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))
