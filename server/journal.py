"""Persistence of running that costs what a commit changes: a snapshot plus a log of commits.

`running.xml` is a snapshot (written atomically: temp file, fsync, rename, directory fsync) whose
first line names the last commit it holds (`<!-- journal-seq N -->`). `running.journal` holds the
commits after it, one record each, appended and fsync'd before the commit is acknowledged. A record
is an edit-config `<config>` that replays the commit's keyed diff: each created or modified node
with `nc:operation="replace"` under its ancestors' keys, each deleted node with `nc:operation="remove"`
(so replaying is idempotent and needs no validation: every record was valid when committed).

Record framing: `b"%d %08x\\n" % (length, crc32)`, the payload, `b"\\n"`. At start the records after the
snapshot's sequence number are replayed in order; a torn or corrupt tail (a record whose fsync never
returned, so never acknowledged) is cut off. When the journal outgrows the snapshot, a new snapshot
is written in a background thread (the bytes are taken in the event loop, between transactions), and
the journal is rewritten with only the records the snapshot does not hold.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path

from lxml import etree

from server.schema import Schema
from server.subscribers import Change
from server.xmlns import NC_NS

log = logging.getLogger(__name__)
_SEQ = re.compile(rb"<!-- journal-seq (\d+) -->")
_OP = f"{{{NC_NS}}}operation"
#: the journal is compacted once it is larger than this and than the snapshot
MIN_COMPACT = int(os.environ.get("NETCONF_JOURNAL_MIN_COMPACT", 4 * 1024 * 1024))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_file(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)


def _write_synced(fd: int, parts: Iterable[bytes]) -> None:
    with os.fdopen(fd, "wb") as f:
        for p in parts:
            f.write(p)
        f.flush()
        os.fsync(f.fileno())


def write_atomically(path: Path, parts: Iterable[bytes]) -> None:
    """temp file + fsync + rename + directory fsync: the file is the old or the new one, whole."""
    fd, tmp = _temp_file(path)
    try:
        _write_synced(fd, parts)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class PendingWrite:
    """An atomic write whose temp file is written and fsync'd in a thread (the GIL is released
    meanwhile) while the caller goes on; `finish` renames it into place, `cancel` drops it. A commit's
    20 MB snapshot is written while the subscribers convert the change."""

    def __init__(self, path: Path, parts: list[bytes]) -> None:
        self.path = path
        fd, self._tmp = _temp_file(path)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, args=(fd, parts), name="snapshot", daemon=True)
        self._thread.start()

    def _work(self, fd: int, parts: list[bytes]) -> None:
        try:
            _write_synced(fd, parts)
        except BaseException as exc:  # reported by finish(), in the caller's thread
            self._error = exc

    def finish(self) -> None:
        self._thread.join()
        try:
            if self._error is not None:
                raise self._error
            os.replace(self._tmp, self.path)
            fsync_dir(self.path.parent)
        except BaseException:
            Path(self._tmp).unlink(missing_ok=True)
            raise

    def cancel(self) -> None:
        self._thread.join()
        Path(self._tmp).unlink(missing_ok=True)


def _frame(payload: bytes) -> bytes:
    return b"%d %08x\n" % (len(payload), zlib.crc32(payload)) + payload + b"\n"


class Journal:
    """The snapshot + commit log of one datastore (running) in `state_dir`."""

    def __init__(self, state_dir: Path, name: str = "running") -> None:
        self.snapshot_path = state_dir / f"{name}.xml"
        self.path = state_dir / f"{name}.journal"
        self.seq = 0  # the last commit written (snapshot or journal)
        self.snapshot_seq = 0
        self.snapshot_bytes = 0
        self.journal_bytes = 0
        self._fd: int | None = None
        self._compacting: threading.Thread | None = None
        self._since: list[tuple[int, bytes]] = []  # records appended while a compaction runs
        self._done: list[int] = []
        self._compact_seq = 0
        self.compactions = 0

    # -- start ---------------------------------------------------------------------------------------
    def read(self, upto: int | None = None) -> tuple[bytes | None, list[bytes]]:
        """The snapshot's bytes (None: no snapshot) and the payloads of the commits after it (up to
        commit `upto` included, when given: a confirmed commit's rollback point)."""
        snap = self.snapshot_path.read_bytes() if self.snapshot_path.exists() else None
        if snap is not None:
            m = _SEQ.search(snap[:200])
            self.snapshot_seq = self.seq = int(m.group(1)) if m else 0
            self.snapshot_bytes = len(snap)
        records: list[bytes] = []
        if self.path.exists():
            data = self.path.read_bytes()
            good, pos = 0, 0
            while pos < len(data):
                nl = data.find(b"\n", pos)
                head = data[pos:nl].split() if nl >= 0 else []
                if len(head) != 3:
                    break
                seq, size, crc = int(head[0]), int(head[1]), int(head[2], 16)
                body = data[nl + 1 : nl + 1 + size]
                end = data[nl + 1 + size : nl + 2 + size]
                if len(body) != size or zlib.crc32(body) != crc or end != b"\n":
                    break
                pos = good = nl + 2 + size
                if seq > self.seq and (upto is None or seq <= upto):
                    records.append(body)
                    self.seq = seq
            if good < len(data):
                cut = len(data) - good
                log.warning("%s: cut a torn or corrupt tail of %d bytes (never acknowledged)", self.path, cut)
                with open(self.path, "r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
            self.journal_bytes = good
        return snap, records

    # -- writes --------------------------------------------------------------------------------------
    def append(self, payload: bytes) -> None:
        """Log one commit; returns once it is on disk (fsync)."""
        self.seq += 1
        rec = b"%d " % self.seq + _frame(payload)
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if new:
                fsync_dir(self.path.parent)
        _write_all(self._fd, rec)
        os.fdatasync(self._fd)
        self.journal_bytes += len(rec)
        if self._compacting is not None:
            self._since.append((self.seq, rec))

    def exists(self) -> bool:
        return self.snapshot_path.exists()

    def snapshot(self, data: bytes) -> None:
        """Replace the snapshot by `data` (the whole datastore now) and empty the journal."""
        self.wait()
        self.seq += 1
        write_atomically(self.snapshot_path, [b"<!-- journal-seq %d -->\n" % self.seq, data])
        self.snapshot_seq, self.snapshot_bytes = self.seq, len(data)
        self._reset_journal([])

    def begin_snapshot(self, data: bytes) -> PendingWrite:
        """`snapshot(data)` in two steps: the file is written in a thread until `end_snapshot`."""
        self.wait()
        return PendingWrite(self.snapshot_path, [b"<!-- journal-seq %d -->\n" % (self.seq + 1), data])

    def end_snapshot(self, pending: PendingWrite, size: int) -> None:
        pending.finish()
        self.seq += 1
        self.snapshot_seq, self.snapshot_bytes = self.seq, size
        self._reset_journal([])

    def needs_compaction(self) -> bool:
        return self._compacting is None and self.journal_bytes > max(MIN_COMPACT, self.snapshot_bytes)

    def compact(self, data: bytes) -> None:
        """Write `data` (the datastore as of `self.seq`) as the snapshot in a background thread; the
        journal keeps only the records appended meanwhile (`finish_compaction`)."""
        seq = self.seq
        self._since = []
        done: list[int] = []

        def work() -> None:
            try:
                write_atomically(self.snapshot_path, [b"<!-- journal-seq %d -->\n" % seq, data])
                done.append(len(data))
            except OSError:
                log.exception("journal compaction failed (the journal is kept whole)")

        self._done, self._compact_seq = done, seq
        self._compacting = threading.Thread(target=work, name="journal-compaction", daemon=True)
        self._compacting.start()

    def finish_compaction(self, block: bool = False) -> None:
        """After a compaction's snapshot is on disk, the journal keeps only the newer records. Runs in
        the event loop between transactions; `block` waits for the thread."""
        t = self._compacting
        if t is None or (t.is_alive() and not block):
            return
        t.join()
        self._compacting = None
        if self._done:
            self.snapshot_seq, self.snapshot_bytes = self._compact_seq, self._done[0]
            self._reset_journal([rec for _seq, rec in self._since])
            self.compactions += 1
        self._since = []

    def wait(self) -> None:
        self.finish_compaction(block=True)

    def _reset_journal(self, records: list[bytes]) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        write_atomically(self.path, records)
        self.journal_bytes = sum(len(r) for r in records)

    def close(self) -> None:
        self.wait()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# -- records ----------------------------------------------------------------------------------------------
def record_of(changes: list[Change], schema: Schema) -> bytes:
    """An edit-config <config> replaying `changes` (see the module docstring)."""
    config = etree.Element(f"{{{NC_NS}}}config", nsmap={"nc": NC_NS})
    for c in changes:
        leaf = _chain(config, c, schema)
        if leaf is None:
            continue
        leaf.set(_OP, "remove" if c.op == "deleted" else "replace")
    return etree.tostring(config)


def _chain(config: etree._Element, c: Change, schema: Schema) -> etree._Element | None:
    steps = [s for s in c.schema_path.split("/") if s]
    keys = list(c.keys)
    parent, sn = config, None
    for i, step in enumerate(steps):
        mod, _, name = step.partition(":")
        ns = schema.module_to_ns.get(mod)
        if ns is None:
            return None
        sn = schema.root(ns, name) if sn is None else sn.children.get((ns, name))
        if sn is None:
            return None
        last = i == len(steps) - 1
        if last and c.op != "deleted" and c.new is not None:
            el = _copy(c.new, c.new_value if sn.kind == "leaf" and c.op == "modified" else None)
            parent.append(el)
            return el
        el = etree.SubElement(parent, f"{{{ns}}}{name}")
        if sn.kind == "list":
            values = keys.pop(0)
            for k, v in zip(sn.keys, values, strict=True):
                etree.SubElement(el, f"{{{ns}}}{k}").text = v
        elif sn.kind == "leaf-list":
            el.text = keys.pop(0)[0]
        elif last and sn.kind == "leaf":
            pass
        parent = el
    return parent


def _copy(el: etree._Element, text: str | None) -> etree._Element:
    import copy

    new = copy.deepcopy(el)
    if text is not None:
        new.text = text
    return new
