"""The binding journal: accepted bindings survive a crash of the daemon.

An append-only file of JSON lines, one per binding change (``add`` carries every field needed to
rebuild the binding, ``del`` its key), written with one ``write(2)`` per burst of registrations
*before* their replies are sent.  Once ``write`` returns, the data is in the kernel's page cache, so a
``kill -9`` of the daemon loses no acknowledged binding.  Durability against power loss is a separate,
documented policy: the file is ``fdatasync``-ed at most ``fsync_interval`` seconds after a write
(group commit; default 50 ms), so a machine crash can lose at most that window — the mobile nodes
re-register when their registration is not known, as RFC 5944 expects after a home agent reboot.

On start the journal is replayed (a torn last line from a crash mid-write is ignored), the live
bindings are handed back to the engines, and the file is compacted: rewritten as a snapshot of the
live bindings (temporary file, ``fsync``, ``rename``), so it never grows without bound.  It is also
compacted when it holds more than ``compact_ratio`` times as many records as there are live bindings.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BindingRecord:
    """Everything needed to rebuild one binding after a restart (addresses as dotted strings).

    A value, never changed after construction; not ``frozen`` because a frozen dataclass costs ~1.5 µs
    to build instead of ~0.25 µs, and one is built per registration."""

    vr: str
    home_address: str
    care_of_address: str
    mobile_node: str
    source_address: str
    source_port: int
    lifetime: int  # granted, seconds
    registered_at: float  # Unix time of acceptance
    identification: int
    flags: int
    encapsulation: str
    nai: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.vr, self.home_address, self.care_of_address)

    def to_json(self) -> str:
        """One journal line, written as text: free-form strings through the C JSON string encoder,
        addresses (dotted quads made by us) and numbers as they are. The JSONEncoder on a dict cost
        ~7 % of a first registration's CPU in the daemon; ``asdict`` ~7x more."""
        nai = "null" if self.nai is None else _string(self.nai)
        return (
            f'{{"op":"add","vr":{_string(self.vr)},"home_address":"{self.home_address}",'
            f'"care_of_address":"{self.care_of_address}","mobile_node":{_string(self.mobile_node)},'
            f'"source_address":"{self.source_address}","source_port":{self.source_port:d},'
            f'"lifetime":{self.lifetime:d},"registered_at":{self.registered_at!r},'
            f'"identification":{self.identification:d},"flags":{self.flags:d},'
            f'"encapsulation":{_string(self.encapsulation)},"nai":{nai}}}'
        )

    def remaining(self, wallclock: float) -> float:
        """Seconds left at ``wallclock`` (a lifetime of 65535 means infinity, RFC 5944 §3.3)."""
        if self.lifetime == 0xFFFF:
            return float("inf")
        return self.registered_at + self.lifetime - wallclock


_ENCODER = json.JSONEncoder(separators=(",", ":"))
_string = json.encoder.encode_basestring_ascii  # a JSON string literal, quotes included (C)


class BindingJournal:
    """Append-only journal of binding changes with periodic group fsync and compaction."""

    def __init__(self, path: Path, *, fsync_interval: float = 0.05, compact_ratio: int = 4) -> None:
        self.path = Path(path)
        self.fsync_interval = fsync_interval
        self.compact_ratio = compact_ratio
        self._fd: int | None = None
        self._dirty_since: float | None = None
        self._records = 0
        self._live: dict[tuple[str, str, str], BindingRecord] = {}
        self.writes = 0

    # -- start-up -----------------------------------------------------------------------------------

    def load(self) -> dict[tuple[str, str, str], BindingRecord]:
        """Replay the file; return the bindings it says are live (expired ones included)."""
        live: dict[tuple[str, str, str], BindingRecord] = {}
        if self.path.exists():
            with self.path.open("rb") as f:
                for number, line in enumerate(f, 1):
                    try:
                        entry = json.loads(line)
                        op = entry.pop("op")
                        if op == "add":
                            record = BindingRecord(**entry)
                            live[record.key] = record
                        elif op == "del":
                            live.pop((entry["vr"], entry["home_address"], entry["care_of_address"]), None)
                        elif op == "clear-vr":
                            for key in [k for k in live if k[0] == entry["vr"]]:
                                del live[key]
                    except (ValueError, KeyError, TypeError):
                        # A torn line can only be the last one (a crash mid-write); anything else
                        # means the file was damaged: say so, keep what is readable.
                        log.warning("binding journal %s: line %d unreadable, skipped", self.path, number)
        self._live = live
        return dict(live)

    def open(self, live: Iterable[BindingRecord] | None = None) -> None:
        """Compact to ``live`` (default: what :meth:`load` found) and open for appending."""
        if live is not None:
            self._live = {r.key: r for r in live}
        self._rewrite()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    # -- running ------------------------------------------------------------------------------------

    def record(
        self, added: Iterable[BindingRecord] = (), removed: Iterable[tuple[str, str, str]] = ()
    ) -> None:
        """Append changes with one write(2); call before sending the replies that acknowledge them."""
        lines = []
        for key in removed:
            if self._live.pop(key, None) is not None:
                vr, home, coa = key
                lines.append(
                    _ENCODER.encode({"op": "del", "vr": vr, "home_address": home, "care_of_address": coa})
                )
        for record in added:
            self._live[record.key] = record
            lines.append(record.to_json())
        if not lines:
            return
        if self._fd is None:
            raise RuntimeError("binding journal is not open")
        data = ("\n".join(lines) + "\n").encode()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.writes += 1
        self._records += len(lines)
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()

    def forget_vr(self, vr: str) -> None:
        """A virtual router was removed: drop its bindings from the journal."""
        keys = [k for k in self._live if k[0] == vr]
        if not keys:
            return
        for key in keys:
            del self._live[key]
        if self._fd is not None:
            os.write(self._fd, (json.dumps({"op": "clear-vr", "vr": vr}) + "\n").encode())
            self._records += 1
            if self._dirty_since is None:
                self._dirty_since = time.monotonic()

    def sync_due(self) -> bool:
        return self._dirty_since is not None and time.monotonic() - self._dirty_since >= self.fsync_interval

    def sync(self) -> None:
        """fdatasync pending writes; compact when the file has grown well past the live set."""
        if self._fd is None or self._dirty_since is None:
            return
        os.fdatasync(self._fd)
        self._dirty_since = None
        if self._records > self.compact_ratio * max(len(self._live), 1024):
            self._compact_open()

    def close(self) -> None:
        if self._fd is not None:
            if self._dirty_since is not None:
                os.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = None
            self._dirty_since = None

    @property
    def live(self) -> Mapping[tuple[str, str, str], BindingRecord]:
        return self._live

    # -- compaction ---------------------------------------------------------------------------------

    def _compact_open(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        self._rewrite()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _rewrite(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for record in self._live.values():
                f.write(record.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._records = len(self._live)
