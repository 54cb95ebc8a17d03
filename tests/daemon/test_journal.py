"""The binding journal: replay, torn tails, compaction, and crash safety of acknowledged writes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from mipha.journal import BindingJournal, BindingRecord, Renewals, pack_renewal, records


def rec(
    home: str, coa: str = "198.51.100.7", vr: str = "home", at: float = 1000.0, lifetime: int = 600
) -> BindingRecord:
    return BindingRecord(
        vr=vr,
        home_address=home,
        care_of_address=coa,
        mobile_node=f"mn-{home}",
        source_address=coa,
        source_port=434,
        lifetime=lifetime,
        registered_at=at,
        identification=42,
        flags=0x02,
        encapsulation="ip-in-ip",
    )


def renewals(*rows: tuple) -> Renewals:
    """A ``renewals`` record of virtual router "home": rows of (home, care-of, source, port, lifetime,
    registered_at, identification, flags, ha_nonce), addresses dotted."""
    return Renewals(
        "home",
        b"".join(
            pack_renewal(*(int(IPv4Address(a)) for a in row[:3]), *row[3:])  # type: ignore[misc]
            for row in rows
        ),
    )


def test_replay_adds_and_deletes(tmp_path: Path) -> None:
    j = BindingJournal(tmp_path / "bindings.journal")
    assert j.load() == {}
    j.open()
    j.record(added=[rec("192.0.2.10"), rec("192.0.2.11")])
    j.record(removed=[("home", "192.0.2.10", "198.51.100.7")], added=[rec("192.0.2.12", coa="203.0.113.5")])
    j.close()
    again = BindingJournal(tmp_path / "bindings.journal").load()
    assert set(again) == {("home", "192.0.2.11", "198.51.100.7"), ("home", "192.0.2.12", "203.0.113.5")}
    assert again[("home", "192.0.2.11", "198.51.100.7")] == rec("192.0.2.11")


def test_renewals_replay_onto_their_binding(tmp_path: Path) -> None:
    """A ``renewals`` line sets the fields a renewal in place changes (the nonce its reply sent too) of
    each binding it names and keeps the others; one for a key that is not live (removed since, or never
    added) replays to nothing; compaction writes whole records with the renewed values."""
    path = tmp_path / "bindings.journal"
    j = BindingJournal(path)
    j.load()
    j.open()
    j.record(added=[rec("192.0.2.10"), rec("192.0.2.11")])
    renewal = ("192.0.2.10", "198.51.100.7", "203.0.113.1", 4500, 900, 2000.5, 77, 0x12, 0xABCD)
    gone = ("192.0.2.11", "198.51.100.7", "198.51.100.7", 434, 900, 2000.5, 78, 0, None)
    never = ("192.0.2.99", "198.51.100.7", "198.51.100.7", 434, 900, 2000.5, 79, 0, None)
    j.record(renewed=[renewals(renewal)])
    j.record(removed=[("home", "192.0.2.11", "198.51.100.7")], renewed=[renewals(never)])
    j.record(renewed=[renewals(gone, never)])
    j.close()
    lines = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [line["op"] for line in lines] == ["add", "add", "renewals", "del", "renewals", "renewals"]
    assert [r["op"] for r in records(path)] == ["add", "add", "renew", "del", "renew", "renew", "renew"]
    assert records(path)[2] == {
        "op": "renew",
        "vr": "home",
        "home_address": "192.0.2.10",
        "care_of_address": "198.51.100.7",
        "source_address": "203.0.113.1",
        "source_port": 4500,
        "lifetime": 900,
        "registered_at": 2000.5,
        "identification": 77,
        "flags": 0x12,
        "ha_nonce": 0xABCD,
    }
    expected = BindingRecord(
        "home",
        "192.0.2.10",
        "198.51.100.7",
        "mn-192.0.2.10",
        "203.0.113.1",
        4500,
        900,
        2000.5,
        77,
        0x12,
        "ip-in-ip",
        ha_nonce=0xABCD,
    )
    again = BindingJournal(path)
    assert again.load() == {expected.key: expected}
    again.open()  # compacted: one whole record
    again.close()
    assert [json.loads(line)["op"] for line in path.read_bytes().splitlines()] == ["add"]
    assert BindingJournal(path).load() == {expected.key: expected}


def test_a_journal_of_renew_lines_still_replays_and_unknown_lines_are_skipped(tmp_path: Path, caplog) -> None:
    """A journal written before ``renewals`` lines (one ``renew`` JSON line per renewal) replays as
    before; a line of an op or a records layout this mipha does not know (a newer mipha's) is skipped
    with a warning, and the rest is kept."""
    path = tmp_path / "bindings.journal"
    old = {
        "op": "renew", "vr": "home", "home_address": "192.0.2.10", "care_of_address": "198.51.100.7",
        "source_address": "203.0.113.1", "source_port": 4500, "lifetime": 900, "registered_at": 2000.5,
        "identification": 77, "flags": 0x12, "ha_nonce": 0xABCD,
    }  # fmt: skip
    newer = renewals(("192.0.2.11", "198.51.100.7", "198.51.100.7", 434, 900, 3000.0, 78, 0, None))
    lines = [
        rec("192.0.2.10").to_json(),
        rec("192.0.2.11").to_json(),
        json.dumps(old),
        newer.to_json().replace('"layout":1', '"layout":2'),
        json.dumps({"op": "renew-v9", "vr": "home"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    live = BindingJournal(path).load()
    renewed = live[("home", "192.0.2.10", "198.51.100.7")]
    assert (renewed.source_address, renewed.lifetime, renewed.identification, renewed.ha_nonce) == (
        "203.0.113.1",
        900,
        77,
        0xABCD,
    )
    assert live[("home", "192.0.2.11", "198.51.100.7")] == rec("192.0.2.11")  # the layout-2 line: skipped
    assert "line 4 unreadable" in caplog.text and "op 'renew-v9' unknown" in caplog.text


def test_any_name_and_value_round_trips_one_line_per_record(tmp_path: Path) -> None:
    """Names are free-form YANG strings: quotes, backslashes, newlines, non-ASCII; numbers at their
    extremes; a fractional time to the last bit."""
    import dataclasses

    odd = dataclasses.replace(
        rec("192.0.2.10", vr='vr "blue"\\1'),
        mobile_node="mn\n<&>\u2028é",
        nai='user"x"@example.net',
        registered_at=1_790_000_000.123456789,
        identification=2**64 - 1,
        flags=0xFF,
    )
    plain = dataclasses.replace(rec("192.0.2.11"), nai=None, registered_at=1_790_000_000.0)
    j = BindingJournal(tmp_path / "bindings.journal")
    j.open()
    j.record(added=[odd, plain])
    j.close()
    lines = (tmp_path / "bindings.journal").read_bytes().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["op"] == "add" for line in lines)
    again = BindingJournal(tmp_path / "bindings.journal").load()
    assert again[odd.key] == odd and again[plain.key] == plain


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "bindings.journal"
    j = BindingJournal(path)
    j.open([])
    j.record(added=[rec("192.0.2.10")])
    j.close()
    with path.open("ab") as f:
        f.write(b'{"op":"add","vr":"home","home_addr')  # crash mid-write
    assert set(BindingJournal(path).load()) == {("home", "192.0.2.10", "198.51.100.7")}


def test_open_compacts_to_the_live_set(tmp_path: Path) -> None:
    path = tmp_path / "bindings.journal"
    j = BindingJournal(path)
    j.open([])
    for i in range(50):
        j.record(added=[rec("192.0.2.10", at=float(i))])
    j.close()
    assert len(path.read_text().splitlines()) == 50
    j2 = BindingJournal(path)
    live = j2.load()
    j2.open()
    j2.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["registered_at"] == 49.0
    assert live[("home", "192.0.2.10", "198.51.100.7")].registered_at == 49.0
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_forget_vr(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = BindingJournal(path)
    j.open([])
    j.record(added=[rec("192.0.2.10"), rec("10.0.0.1", vr="other")])
    j.forget_vr("home")
    j.close()
    assert set(BindingJournal(path).load()) == {("other", "10.0.0.1", "198.51.100.7")}


def test_remaining_lifetime_and_infinity() -> None:
    assert rec("192.0.2.1", at=1000.0, lifetime=600).remaining(1100.0) == 500.0
    assert rec("192.0.2.1", lifetime=0xFFFF).remaining(1e12) == float("inf")


def test_kill_9_after_record_loses_nothing(tmp_path: Path) -> None:
    """A child records bindings, says so, and is SIGKILLed at once: every acknowledged one survives."""
    path = tmp_path / "bindings.journal"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from tests.daemon.test_journal import rec
        from mipha.journal import BindingJournal
        j = BindingJournal({str(path)!r}, fsync_interval=3600)
        j.open([])
        for i in range(1000):
            j.record(added=[rec(f"10.0.{{i // 256}}.{{i % 256}}")])
        print("acknowledged", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "acknowledged"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert len(BindingJournal(path).load()) == 1000


class Model:
    """What the journal should replay to: the live set, kept by the test (the journal keeps none)."""

    def __init__(self, j: BindingJournal) -> None:
        self.j, self.live = j, {}

    def add(self, *records: BindingRecord) -> None:
        self.j.record(added=records)
        self.live.update((r.key, r) for r in records)

    def remove(self, *keys: tuple[str, str, str]) -> None:
        self.j.record(removed=keys)
        for key in keys:
            self.live.pop(key, None)

    def forget(self, vr: str) -> None:
        self.j.forget_vr(vr)
        self.live = {k: r for k, r in self.live.items() if k[0] != vr}


def test_compaction_while_registrations_go_on(tmp_path: Path) -> None:
    """begin → a snapshot taken page by page while lines keep coming (adds, renewals, deletes, a
    removed router), the snapshot written in another thread → finish: the new file holds the
    snapshot plus every line written since begin, and replays to exactly the live set."""
    path = tmp_path / "bindings.journal"
    j = BindingJournal(path, compact_ratio=1, compact_min=10)
    j.open()
    m = Model(j)
    m.add(*[rec(f"192.0.2.{i}") for i in range(1, 101)], rec("198.51.100.1", vr="gone"))
    for i in range(1, 101):  # renewals: the file grows past the live set
        m.add(rec(f"192.0.2.{i}", at=2000.0))
    assert j.compaction_due(len(m.live)) and not j.compaction_due(1000)
    j.begin_compaction()
    assert not j.compaction_due(len(m.live))  # one at a time
    with pytest.raises(RuntimeError):
        j.begin_compaction()  # a second one would drop the lines the first keeps
    ordered = sorted(m.live.values(), key=lambda r: r.key)
    snapshot = ordered[:50]  # first page
    m.add(rec("192.0.2.200"), rec("192.0.2.5", at=3000.0))  # a renewal behind the walk
    m.add(rec("192.0.2.90", at=3000.0))  # a renewal ahead of it
    m.remove(("home", "192.0.2.7", "198.51.100.7"), ("home", "192.0.2.95", "198.51.100.7"))
    snapshot += [r for r in sorted(m.live.values(), key=lambda r: r.key) if r.key > snapshot[-1].key]
    m.forget("gone")
    result: list[int] = []
    writer = threading.Thread(target=lambda: result.append(j.write_compacted(snapshot)))
    writer.start()
    m.add(rec("192.0.2.201"))  # while the snapshot is being written
    writer.join()
    j.finish_compaction(result[0], len(snapshot))
    m.add(rec("192.0.2.202"))  # appended to the new file
    j.close()
    lines = path.read_bytes().splitlines()
    assert len(lines) == len(snapshot) + 7 + 1 and j.compactions == 1  # 7 lines since begin, 1 after
    assert (path.stat().st_mode & 0o777) == 0o600
    again = BindingJournal(path).load()
    assert again == m.live and len(again) == 101
    assert again[("home", "192.0.2.5", "198.51.100.7")].registered_at == 3000.0
    assert again[("home", "192.0.2.90", "198.51.100.7")].registered_at == 3000.0


def test_sync_in_a_thread_races_nothing(tmp_path: Path) -> None:
    """A worker thread fdatasyncs non-stop while the loop thread writes and compacts repeatedly: no
    error, and the file replays to the live set."""
    path = tmp_path / "bindings.journal"
    j = BindingJournal(path, fsync_interval=0.0, compact_ratio=1, compact_min=10)
    j.open()
    m = Model(j)
    stop = threading.Event()
    errors: list[BaseException] = []

    def syncer() -> None:
        while not stop.is_set():
            try:
                j.sync()
            except BaseException as exc:  # collected for the assertion
                errors.append(exc)

    worker = threading.Thread(target=syncer)
    worker.start()
    try:
        for round_ in range(20):
            m.add(*[rec(f"10.0.{round_}.{i}") for i in range(1, 60)])
            m.remove(*[("home", f"10.0.{round_}.{i}", "198.51.100.7") for i in range(1, 30)])
            if j.compaction_due(len(m.live)):
                j.begin_compaction()
                snapshot = list(m.live.values())
                m.add(rec(f"10.1.{round_}.1"))
                j.finish_compaction(j.write_compacted(snapshot), len(snapshot))
    finally:
        stop.set()
        worker.join()
        j.close()
    assert errors == [] and j.compactions > 5
    assert BindingJournal(path).load() == m.live


def test_daemon_compaction_task_snapshots_the_engines(tmp_path: Path, monkeypatch) -> None:
    """The daemon's compaction task takes its snapshot from the engines (the journal keeps none), under
    the transaction lock; a snapshot that cannot be written (disk full) leaves the journal appending
    to its current file, nothing lost, and the next attempt succeeds."""
    from ipaddress import IPv4Address
    from types import SimpleNamespace

    from ha.engine.config import HomeAgentConfig, MobileNode, SecurityAssociation, VirtualRouterConfig
    from ha.engine.home_agent import HomeAgent
    from mipha.daemon import Daemon
    from mipha.runtime import VirtualRouter, record_of

    sa = SecurityAssociation(256, bytes(16))
    nodes = [
        MobileNode(f"mn-192.0.2.{i}", home_address=IPv4Address(f"192.0.2.{i}"), security_associations=[sa])
        for i in range(1, 50)
    ]
    engine = HomeAgent(
        VirtualRouterConfig(
            "home", home_agent=HomeAgentConfig(IPv4Address("192.0.2.254")), mobile_nodes=nodes
        )
    )
    path = tmp_path / "bindings.journal"
    j = BindingJournal(path, compact_ratio=1, compact_min=10)
    j.open()
    for i in range(1, 50):
        for at in (1000.0, 1500.0):  # accepted, then renewed: two lines each
            assert engine.restore_binding(rec(f"192.0.2.{i}", at=at), now=100.0, wallclock=2000.0)
            j.record(
                added=[
                    record_of(
                        "home",
                        engine,
                        engine.raw_binding(
                            (int(IPv4Address(f"192.0.2.{i}")) << 32) | int(IPv4Address("198.51.100.7"))
                        ),
                    )
                ]
            )
    vr = SimpleNamespace(name="home", engine=engine)
    vr.record_pages = lambda: VirtualRouter.record_pages(vr)
    owner = SimpleNamespace(
        journal=j, routers={"home": vr}, server=SimpleNamespace(core=SimpleNamespace(txn_lock=asyncio.Lock()))
    )
    assert j.compaction_due(Daemon.binding_count(owner))

    def broken(records):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(j, "write_compacted", broken)
    asyncio.run(Daemon._journal_compact(owner))
    assert j.compactions == 0 and j.compaction_due(49)  # aborted: tried again later
    monkeypatch.undo()
    asyncio.run(Daemon._journal_compact(owner))
    assert j.compactions == 1
    j.close()
    lines = path.read_bytes().splitlines()
    again = BindingJournal(path).load()
    assert len(lines) == 49 and len(again) == 49
    assert {r.registered_at for r in again.values()} == {1500.0}
