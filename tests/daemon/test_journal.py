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
from pathlib import Path

from mipha.journal import BindingJournal, BindingRecord


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


def test_compaction_while_registrations_go_on(tmp_path: Path) -> None:
    """begin (snapshot) → lines keep coming (adds, renewals, deletes, a removed router) while the
    snapshot is written in another thread → finish: the new file holds the snapshot plus every line
    written meanwhile, and replays to exactly the live set."""
    path = tmp_path / "bindings.journal"
    j = BindingJournal(path, compact_ratio=1)
    j.open()
    j.record(added=[rec(f"192.0.2.{i}") for i in range(1, 101)] + [rec("198.51.100.1", vr="gone")])
    for i in range(1, 101):  # renewals: the file grows past the live set
        j.record(added=[rec(f"192.0.2.{i}", at=2000.0)])
    snapshot = j.begin_compaction()
    assert len(snapshot) == 101 and not j.compaction_due()  # one at a time
    result: list[int] = []
    writer = threading.Thread(target=lambda: result.append(j.write_compacted(snapshot)))
    writer.start()
    j.record(
        added=[rec("192.0.2.200"), rec("192.0.2.5", at=3000.0)],
        removed=[("home", "192.0.2.7", "198.51.100.7")],
    )
    j.forget_vr("gone")
    writer.join()
    j.finish_compaction(result[0], len(snapshot))
    j.record(added=[rec("192.0.2.201")])  # appended to the new file
    expected = dict(j.live)
    j.close()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 101 + 4 + 1 and j.compactions == 1
    assert (path.stat().st_mode & 0o777) == 0o600
    again = BindingJournal(path).load()
    assert again == expected and len(again) == 101
    assert again[("home", "192.0.2.5", "198.51.100.7")].registered_at == 3000.0


def test_sync_in_a_thread_races_nothing(tmp_path: Path) -> None:
    """A worker thread fdatasyncs non-stop while the loop thread writes and compacts repeatedly: no
    error, and the file replays to the live set."""
    path = tmp_path / "bindings.journal"
    j = BindingJournal(path, fsync_interval=0.0, compact_ratio=1, compact_min=10)
    j.open()
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
            j.record(added=[rec(f"10.0.{round_}.{i}") for i in range(1, 60)])
            j.record(removed=[("home", f"10.0.{round_}.{i}", "198.51.100.7") for i in range(1, 30)])
            if j.compaction_due():
                snapshot = j.begin_compaction()
                j.record(added=[rec(f"10.1.{round_}.1")])
                j.finish_compaction(j.write_compacted(snapshot), len(snapshot))
        expected = dict(j.live)
    finally:
        stop.set()
        worker.join()
        j.close()
    assert errors == [] and j.compactions > 5
    assert BindingJournal(path).load() == expected


def test_daemon_compaction_task_and_a_failed_snapshot(tmp_path: Path, monkeypatch) -> None:
    """The daemon's compaction task (snapshot written in the executor); a snapshot that cannot be
    written leaves the journal appending to its current file, nothing lost."""
    from types import SimpleNamespace

    from mipha.daemon import Daemon

    path = tmp_path / "bindings.journal"
    j = BindingJournal(path, compact_ratio=1, compact_min=10)
    j.open()
    j.record(added=[rec(f"192.0.2.{i}") for i in range(1, 50)])
    for i in range(1, 50):
        j.record(added=[rec(f"192.0.2.{i}", at=2000.0)])
    owner = SimpleNamespace(journal=j)

    def broken(records):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(j, "write_compacted", broken)
    asyncio.run(Daemon._journal_compact(owner))
    assert j.compactions == 0 and j.compaction_due()  # aborted: may be tried again
    j.record(added=[rec("192.0.2.100")])
    monkeypatch.undo()
    asyncio.run(Daemon._journal_compact(owner))
    assert j.compactions == 1
    expected = dict(j.live)
    j.close()
    assert len(path.read_bytes().splitlines()) == 50 and BindingJournal(path).load() == expected
