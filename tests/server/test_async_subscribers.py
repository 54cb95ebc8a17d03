"""Async config subscribers and RPC handlers: awaited transactions, serialisation across sessions,
per-session reply order, kill-session / session loss while an RPC awaits, background rollbacks."""

from __future__ import annotations

import asyncio

import pytest
from lxml import etree
from nc_harness import HA, NS, Harness, edit, errors, idle, mn, vr

from server.errors import RpcError
from server.subscribers import Transaction

M = NS["m"]
GET_RUNNING = "<get-config><source><running/></source></get-config>"


class AsyncRecorder:
    """A subscriber whose every phase is a coroutine that yields to the loop; it can refuse in one
    phase, or stop in prepare until `gate` is set (the test then sees the transaction in flight)."""

    def __init__(self, name: str, log: list, refuse_in: str | None = None, gated: bool = False) -> None:
        self.name, self.log, self.refuse_in = name, log, refuse_in
        self.gate = asyncio.Event() if gated else None
        self.in_prepare = False

    async def _step(self, phase: str, txn: Transaction) -> None:
        await asyncio.sleep(0.001)
        self.log.append((self.name, phase, txn.id))
        if phase == self.refuse_in:
            raise RpcError("resource-denied", f"kernel refused {self.name}", app_tag="kernel")

    async def validate(self, txn: Transaction) -> None:
        await self._step("validate", txn)

    async def prepare(self, txn: Transaction) -> None:
        if self.gate is not None:
            self.in_prepare = True
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.log.append((self.name, "prepare-cancelled", txn.id))
                raise
            finally:
                self.in_prepare = False
        await self._step("prepare", txn)

    async def abort(self, txn: Transaction) -> None:
        await self._step("abort", txn)

    async def apply(self, txn: Transaction) -> None:
        await self._step("apply", txn)


def names(data: etree._Element) -> list[str]:
    return [e.text for e in data.iterfind(".//m:mobile-node/m:name", NS)]


def phases(log: list) -> list[tuple[str, str]]:
    return [(n, p) for n, p, _ in log]


def test_async_refusal_in_prepare_is_the_rpc_error_and_running_is_unchanged():
    log: list = []
    subs = [AsyncRecorder("a", log), AsyncRecorder("b", log), AsyncRecorder("c", log)]
    h = Harness(subscribers=subs)
    try:
        c = h.client()
        c.ok(edit(vr(HA + mn("old", "10.0.0.5"))))
        log.clear()
        subs[1].refuse_in = "prepare"
        r = c.rpc(edit(vr(mn("new", "10.0.0.6"))))
        assert errors(r) == [
            {
                "error-type": "application",
                "error-tag": "resource-denied",
                "error-severity": "error",
                "error-app-tag": "kernel",
                "error-message": "kernel refused b",
            }
        ]
        assert phases(log) == [
            ("a", "validate"),
            ("b", "validate"),
            ("c", "validate"),
            ("a", "prepare"),
            ("b", "prepare"),
            ("a", "abort"),  # only the subscriber whose prepare succeeded
        ]
        assert names(c.data(GET_RUNNING)) == ["old"]
        assert b"new" not in (h.state_dir / "running.xml").read_bytes()
        assert idle(h)
    finally:
        h.close()


def test_async_apply_is_awaited_before_the_reply():
    log: list = []
    seen_reply_in_apply: list[bool] = []

    class SlowApply(AsyncRecorder):
        async def apply(self, txn: Transaction) -> None:
            await asyncio.sleep(0.01)
            seen_reply_in_apply.append(bool(client.inbox))
            await super().apply(txn)

    h = Harness(subscribers=[SlowApply("engine", log)])
    try:
        client = h.client()
        client.ok(edit(vr(HA + mn("x", "10.0.0.5"))))
        assert phases(log) == [("engine", "validate"), ("engine", "prepare"), ("engine", "apply")]
        assert seen_reply_in_apply == [False]
        assert names(client.data(GET_RUNNING)) == ["x"]
    finally:
        h.close()


def test_second_session_reads_old_running_and_its_changes_wait_for_the_pending_transaction():
    log: list = []
    engine = AsyncRecorder("engine", log, gated=True)
    h = Harness(subscribers=[engine])
    try:
        a, b = h.client(), h.client()
        engine.gate.set()
        a.ok(edit(vr(HA + mn("base", "10.0.0.4"))))
        engine.gate.clear()
        log.clear()
        a.ok(edit(vr(mn("x", "10.0.0.5")), target="candidate"))
        a.send_rpc("<commit/>")
        h.run_until(lambda: engine.in_prepare)
        # B reads running while A's commit is in prepare: the old running
        assert names(b.data(GET_RUNNING)) == ["base"]
        # B's changes are queued behind A's transaction (pipelined: no reply yet)
        b.send_rpc(edit(vr(mn("y", "10.0.0.6"))))
        b.send_rpc("<lock><target><running/></target></lock>")
        h.advance(0.02)
        assert not a.inbox and not b.inbox
        assert phases(log) == [("engine", "validate")]  # only A's transaction reached the engine
        engine.gate.set()
        assert a.reply().find("nc:ok", NS) is not None
        rb = [b.reply(), b.reply()]
        assert [r.get("message-id") for r in rb] == ["2", "3"]
        assert all(r.find("nc:ok", NS) is not None for r in rb), [etree.tostring(r) for r in rb]
        # A's transaction completed (apply) before B's started (validate)
        assert phases(log) == [("engine", p) for p in ("validate", "prepare", "apply")] * 2
        first, second = {t for _, _, t in log[:3]}, {t for _, _, t in log[3:]}
        assert len(first) == len(second) == 1 and first != second
        assert sorted(names(a.data(GET_RUNNING))) == ["base", "x", "y"]
        assert h.core.locks["running"][0] == b.sess.id
    finally:
        h.close()


def test_replies_of_one_session_stay_in_request_order_with_a_slow_async_rpc():
    gate = asyncio.Event()
    calls: list[str] = []

    async def clear_bindings(sess, op):
        calls.append("start")
        await gate.wait()
        calls.append("end")
        out = etree.Element(f"{{{M}}}cleared")
        out.text = "2"
        return out

    h = Harness()
    try:
        h.core.register_rpc(M, "clear-bindings", clear_bindings)
        a, other = h.client(), h.client()
        a.send_rpc(f"<clear-bindings xmlns='{M}'><virtual-router>default</virtual-router></clear-bindings>")
        a.send_rpc(GET_RUNNING)
        h.run_until(lambda: calls == ["start"])
        other.data(GET_RUNNING)  # another session is not held up
        h.advance(0.01)
        assert not a.inbox  # the fast get-config waits for the slow rpc before it
        gate.set()
        r1, r2 = a.reply(), a.reply()
        assert (r1.get("message-id"), r1.findtext("m:cleared", namespaces=NS)) == ("1", "2")
        assert r2.get("message-id") == "2" and r2.find("nc:data", NS) is not None
        assert calls == ["start", "end"]
        assert idle(h)
    finally:
        h.close()


def test_async_registered_rpc_error_and_unexpected_exception():
    async def refuse(sess, op):
        await asyncio.sleep(0)
        raise RpcError("in-use", "the engine is busy", app_tag="busy")

    async def crash(sess, op):
        await asyncio.sleep(0)
        raise ValueError("bug")

    h = Harness()
    try:
        h.core.register_rpc(M, "clear-bindings", refuse)
        h.core.register_rpc(M, "clear-statistics", crash)
        c = h.client()
        e = errors(c.rpc(f"<clear-bindings xmlns='{M}'/>"))
        assert [(x["error-tag"], x["error-app-tag"]) for x in e] == [("in-use", "busy")]
        e = errors(c.rpc(f"<clear-statistics xmlns='{M}'/>"))
        assert [(x["error-tag"], x["error-message"]) for x in e] == [
            ("operation-failed", "internal error: ValueError")
        ]
        c.data(GET_RUNNING)  # the session goes on
    finally:
        h.close()


@pytest.mark.parametrize("how", ["kill-session", "connection-lost"])
def test_session_end_while_its_transaction_awaits_cancels_it_and_frees_the_lock(how):
    log: list = []
    first, engine = AsyncRecorder("first", log), AsyncRecorder("engine", log, gated=True)
    h = Harness(subscribers=[first, engine])
    try:
        victim, other = h.client(), h.client()
        victim.send_rpc(edit(vr(HA + mn("x", "10.0.0.5"))))
        victim.send_rpc(GET_RUNNING)  # queued behind it: dropped with the session
        h.run_until(lambda: engine.in_prepare)
        assert h.core.txn_lock.locked()
        if how == "kill-session":
            other.ok(f"<kill-session><session-id>{victim.sess.id}</session-id></kill-session>")
        else:
            victim.sess.connection_lost()
        h.run_until(lambda: idle(h))
        assert victim.closed and victim.sess._busy is None and not victim.sess._backlog
        assert not victim.inbox  # its pending replies were dropped
        assert phases(log) == [
            ("first", "validate"),
            ("engine", "validate"),
            ("first", "prepare"),
            ("engine", "prepare-cancelled"),
            ("first", "abort"),
        ]
        assert len(other.data(GET_RUNNING)) == 0
        engine.gate.set()
        other.ok(edit(vr(HA + mn("y", "10.0.0.6"))))  # the lock was released
        assert names(other.data(GET_RUNNING)) == ["y"]
    finally:
        h.close()


def test_confirmed_commit_timeout_rollback_runs_async_subscribers():
    log: list = []
    h = Harness(subscribers=[AsyncRecorder("engine", log)])
    try:
        c = h.client()
        c.ok(edit(vr(HA + mn("kept", "10.0.0.4"))))
        c.ok(edit(vr(mn("unconfirmed", "10.0.0.5")), target="candidate"))
        c.ok("<commit><confirmed/><confirm-timeout>1</confirm-timeout></commit>")
        assert sorted(names(c.data(GET_RUNNING))) == ["kept", "unconfirmed"]
        log.clear()
        h.run_until(lambda: h.core.pending is None and idle(h), limit=10)
        assert phases(log) == [("engine", "validate"), ("engine", "prepare"), ("engine", "apply")]
        assert names(c.data(GET_RUNNING)) == ["kept"]
        assert not (h.state_dir / "rollback.xml").exists()
    finally:
        h.close()


def test_rollback_on_session_loss_runs_async_subscribers_and_waits_for_the_lock():
    log: list = []
    engine = AsyncRecorder("engine", log, gated=True)
    engine.gate.set()
    h = Harness(subscribers=[engine])
    try:
        a, b = h.client(), h.client()
        a.ok(edit(vr(HA + mn("unconfirmed", "10.0.0.5")), target="candidate"))
        a.ok("<commit><confirmed/></commit>")
        log.clear()
        engine.gate.clear()
        # B's transaction is in flight when A goes away: the rollback waits for it
        b.send_rpc(edit(vr(mn("other", "10.0.0.6"))))
        h.run_until(lambda: engine.in_prepare)
        a.sess.connection_lost()
        h.advance(0.01)
        assert phases(log) == [("engine", "validate")] and h.core.pending is not None
        engine.gate.set()
        assert b.reply().find("nc:ok", NS) is not None
        h.run_until(lambda: h.core.pending is None and idle(h))
        assert phases(log) == [("engine", p) for p in ("validate", "prepare", "apply")] * 2
        assert log[0][2] != log[3][2]
        # the configuration before the confirmed commit (B's later edit goes with it, RFC 6241 §8.4)
        assert len(b.data(GET_RUNNING)) == 0
        assert not (h.state_dir / "rollback.xml").exists()
    finally:
        h.close()


def test_replay_running_brings_subscribers_up_or_raises(tmp_path):
    doc = f'<config xmlns="{NS["nc"]}">{vr(HA + mn("x", "10.0.0.5"))}</config>'.encode()
    h = Harness(state_dir=tmp_path)
    try:
        assert h.core.seed(doc)
    finally:
        h.close()
    log: list = []
    h = Harness(state_dir=tmp_path, subscribers=[AsyncRecorder("a", log), AsyncRecorder("b", log)])
    try:
        h.loop.run_until_complete(h.core.replay_running())
        assert phases(log) == [(n, p) for p in ("validate", "prepare", "apply") for n in ("a", "b")]
    finally:
        h.close()
    log = []
    h = Harness(state_dir=tmp_path, subscribers=[AsyncRecorder("a", log), AsyncRecorder("b", log, "prepare")])
    try:
        with pytest.raises(RpcError) as exc:
            h.loop.run_until_complete(h.core.replay_running())
        assert exc.value.tag == "resource-denied"
        assert phases(log)[-2:] == [("b", "prepare"), ("a", "abort")]
        assert names(h.client().data(GET_RUNNING)) == ["x"]  # running itself is not touched
        assert not h.core.txn_lock.locked()
    finally:
        h.close()


def test_start_server_seeds_then_replays_before_listening(tmp_path):
    from server.app import start_server
    from server.config import ServerConfig

    doc = f'<config xmlns="{NS["nc"]}">{vr(HA + mn("x", "10.0.0.5"))}</config>'.encode()

    async def start(subs: list) -> None:
        handle = await start_server(
            ServerConfig(state_dir=tmp_path, port=0), subscribers=subs, seed_config=doc, replay=True
        )
        try:
            assert names(etree.fromstring(handle.core.ds.running.to_bytes("config"))) == ["x"]
        finally:
            handle.close()
            await handle.wait_closed()

    log: list = []
    asyncio.run(start([AsyncRecorder("engine", log)]))
    assert phases(log) == [("engine", "validate"), ("engine", "prepare"), ("engine", "apply")]
    log.clear()
    with pytest.raises(RpcError, match="kernel refused"):  # second start: no seed, replay refused
        asyncio.run(start([AsyncRecorder("engine", log, refuse_in="prepare")]))
    assert phases(log) == [("engine", "validate"), ("engine", "prepare")]


def test_session_killed_while_its_confirmed_commit_applies_is_committed_then_rolled_back():
    log: list = []

    class GatedApply(AsyncRecorder):
        async def apply(self, txn: Transaction) -> None:
            self.in_apply = True
            await self.apply_gate.wait()
            await super().apply(txn)

    engine = GatedApply("engine", log)
    engine.in_apply, engine.apply_gate = False, asyncio.Event()
    h = Harness(subscribers=[engine])
    try:
        victim, other = h.client(), h.client()
        victim.ok(edit(vr(HA + mn("x", "10.0.0.5")), target="candidate"))
        victim.send_rpc("<commit><confirmed/></commit>")
        h.run_until(lambda: engine.in_apply)
        other.ok(f"<kill-session><session-id>{victim.sess.id}</session-id></kill-session>")
        engine.apply_gate.set()  # the apply phase is not interrupted by the kill
        h.run_until(lambda: h.core.pending is None and idle(h))
        assert not victim.inbox
        # the commit completed (validate, prepare, apply), then nobody could confirm it: rolled back
        assert phases(log) == [("engine", p) for p in ("validate", "prepare", "apply")] * 2
        assert len(other.data(GET_RUNNING)) == 0
        assert not (h.state_dir / "rollback.xml").exists()
    finally:
        h.close()
