"""The binding journal: accepted bindings survive a crash of the daemon.

An append-only file of JSON lines (``add`` carries every field needed to rebuild a binding, ``del``
its key), written with one ``write(2)`` per burst of registrations *before* their replies are sent.
Renewals in place — the usual registration — are one ``renewals`` line per burst: the key and the
fields a renewal sets of each binding, packed in binary (:data:`RENEWAL`, 38 bytes) and base64-encoded
(52 characters per renewal, under a quarter of a JSON line's; one ``struct`` call builds a record).
Format: ``renewals`` lines carry their record ``layout`` (1); a journal from before them has one
``renew`` JSON line per renewal, which :meth:`BindingJournal.load` still replays; a line of an op or
layout it does not know is skipped with a warning (a journal written by a newer mipha).  Once
``write`` returns, the data is in the kernel's page cache, so a ``kill -9`` of the daemon loses no
acknowledged binding.  Durability
against power loss is a separate, documented policy: the file is ``fdatasync``-ed at most
``fsync_interval`` seconds after a write (group commit; default 50 ms), so a machine crash can lose
at most that window — the mobile nodes re-register when their registration is not known, as RFC 5944
expects after a home agent reboot.

On start the journal is replayed (a torn last line from a crash mid-write is ignored), the live
bindings are handed back to the engines, and the file is compacted: rewritten as a snapshot of the
live bindings (temporary file, ``fsync``, ``rename``), so it never grows without bound.  It is also
compacted while running, when it holds more than ``compact_ratio`` times as many records as there are
live bindings, without stopping registrations (see :meth:`BindingJournal.begin_compaction`).  The
journal keeps no copy of the live bindings in memory (that copy was ~490 B per binding, nearly half
of the daemon's memory per binding): a running compaction writes a snapshot the daemon takes from
the engines.

Threads: every method runs on the event loop's thread except :meth:`BindingJournal.sync` and
:meth:`BindingJournal.write_compacted`, which the daemon runs in a worker thread; the one file
descriptor switch (end of a compaction) is serialised with ``sync`` by a lock.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable
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
    #: An AAA-learnt node's subscriber (``ha.engine.aaa.Subscriber.to_dict``: key, address source,
    #: accounting session): what lets its bindings be renewed after a restart without RADIUS.  Read
    #: back as a dict; written from the subscriber's JSON text, encoded once.
    aaa: dict | str | None = None
    #: The HA nonce sent with the reply that made this binding, while it is the node's expected one
    #: (nonce replay protection): a restart or a takeover then answers the node's next request and a
    #: retransmission of this one as the daemon that wrote it would have.
    ha_nonce: int | None = None
    #: RFC 3543 revocation the relaying foreign agent negotiated (``HomeAgent.revocation_record``: agent
    #: address, both timestamps, I bit): what lets the home agent still revoke the binding after a restart.
    revocation: dict | None = None

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
            f'"encapsulation":{_string(self.encapsulation)},"nai":{nai}'
            + ("" if self.ha_nonce is None else f',"ha_nonce":{self.ha_nonce:d}')
            + ("" if self.aaa is None else f',"aaa":{self._aaa_json()}')
            + ("}" if self.revocation is None else f',"revocation":{_ENCODER.encode(self.revocation)}}}')
        )

    def _aaa_json(self) -> str:
        aaa = self.aaa
        return aaa if isinstance(aaa, str) else _ENCODER.encode(aaa)

    def remaining(self, wallclock: float) -> float:
        """Seconds left at ``wallclock`` (a lifetime of 65535 means infinity, RFC 5944 §3.3)."""
        if self.lifetime == 0xFFFF:
            return float("inf")
        return self.registered_at + self.lifetime - wallclock


_ENCODER = json.JSONEncoder(separators=(",", ":"))
_string = json.encoder.encode_basestring_ascii  # a JSON string literal, quotes included (C)

#: One binding renewed in place in a ``renewals`` line (network byte order): home address, care-of
#: address, source address, source port, lifetime, Identification, registered_at (Unix time, a double),
#: flags (:attr:`BindingRecord.flags`; :data:`HAS_NONCE` set: the next field is the HA nonce), HA nonce.
RENEWAL = struct.Struct("!IIIHHQdHI")
RENEWAL_LAYOUT = 1
HAS_NONCE = 0x8000
_RENEWED_FIELDS = ("source_address", "source_port", "lifetime", "registered_at", "identification", "flags")


@dataclass(slots=True, frozen=True)
class Renewals:
    """The bindings of one virtual router renewed in place in one burst: :data:`RENEWAL` records."""

    vr: str
    records: bytes

    def to_json(self) -> str:
        records = base64.b64encode(self.records).decode()
        return f'{{"op":"renewals","vr":{_string(self.vr)},"layout":{RENEWAL_LAYOUT},"records":"{records}"}}'


def pack_renewal(
    home: int, coa: int, source: int, port: int, lifetime: int, registered_at: float, identification: int,
    flags: int, ha_nonce: int | None,
) -> bytes:  # fmt: skip
    """One :data:`RENEWAL` record (addresses as integers; mipha.runtime packs the engine's bindings
    directly with ``RENEWAL.pack``)."""
    nonce = 0 if ha_nonce is None else ha_nonce
    flags = flags if ha_nonce is None else flags | HAS_NONCE
    return RENEWAL.pack(home, coa, source, port, lifetime, identification, registered_at, flags, nonce)


def _ntoa(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4, "big"))


def renewal_records(entry: dict) -> list[dict]:
    """A ``renewals`` line (parsed JSON) as one ``renew`` record per binding: ``vr``, ``home_address``,
    ``care_of_address`` and the :class:`BindingRecord` fields a renewal sets; ValueError when the line
    is not one this mipha reads."""
    if entry["layout"] != RENEWAL_LAYOUT:
        raise ValueError(f"renewals layout {entry['layout']} (this mipha reads {RENEWAL_LAYOUT})")
    data = base64.b64decode(entry["records"], validate=True)
    if len(data) % RENEWAL.size:
        raise ValueError("renewals: records of a partial length")
    vr = entry["vr"]
    return [
        {
            "op": "renew",
            "vr": vr,
            "home_address": _ntoa(home),
            "care_of_address": _ntoa(coa),
            "source_address": _ntoa(source),
            "source_port": port,
            "lifetime": lifetime,
            "registered_at": at,
            "identification": identification,
            "flags": flags & ~HAS_NONCE,
            "ha_nonce": nonce if flags & HAS_NONCE else None,
        }
        for home, coa, source, port, lifetime, identification, at, flags, nonce in RENEWAL.iter_unpack(data)
    ]


def _renew(live: dict[tuple[str, str, str], BindingRecord], entry: dict) -> None:
    """Apply one ``renew`` record; a key that is not live replays to nothing (a compaction's snapshot
    may lack a binding renewed and then removed while it ran: its ``del`` follows)."""
    key = (entry["vr"], entry["home_address"], entry["care_of_address"])
    renewed = live.get(key)
    if renewed is not None:
        fields = {name: entry[name] for name in _RENEWED_FIELDS}
        fields["ha_nonce"] = entry.get("ha_nonce")  # none carried: absent
        live[key] = dataclasses.replace(renewed, **fields)


def records(path: Path) -> list[dict]:
    """Every record of a journal file in order, parsed (for tests and inspection): a ``renewals`` line
    gives one ``renew`` record per binding (:func:`renewal_records`); an unreadable line is skipped."""
    out: list[dict] = []
    for line in Path(path).read_bytes().splitlines():
        try:
            entry = json.loads(line)
            out.extend(renewal_records(entry) if entry.get("op") == "renewals" else [entry])
        except (ValueError, KeyError, TypeError, struct.error):
            continue
    return out


class BindingJournal:
    """Append-only journal of binding changes with periodic group fsync and compaction."""

    def __init__(
        self, path: Path, *, fsync_interval: float = 0.05, compact_ratio: int = 4, compact_min: int = 1024
    ) -> None:
        self.path = Path(path)
        self.fsync_interval = fsync_interval
        self.compact_ratio = compact_ratio
        self.compact_min = compact_min  # a small file is never worth compacting
        self._fd: int | None = None
        self._fd_lock = threading.Lock()  # sync() (worker thread) vs the switch to a compacted file
        self._dirty_since: float | None = None
        self._records = 0
        #: what load() found, until open() has written it out (no copy of the live bindings is kept
        #: while running: the engines hold them, and a compaction takes its snapshot from them)
        self._loaded: dict[tuple[str, str, str], BindingRecord] = {}
        #: lines written while a compaction runs: they go to the new file too (None: no compaction)
        self._carry: list[str] | None = None
        self.writes = 0
        self.compactions = 0

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
                        elif op == "renewals":
                            for renewal in renewal_records(entry):
                                _renew(live, renewal)
                        elif op == "renew":  # one renewal per line (journals from before ``renewals``)
                            _renew(live, entry)
                        elif op == "del":
                            live.pop((entry["vr"], entry["home_address"], entry["care_of_address"]), None)
                        elif op == "clear-vr":
                            for key in [k for k in live if k[0] == entry["vr"]]:
                                del live[key]
                        else:
                            log.warning(
                                "binding journal %s: line %d: op %r unknown, skipped", self.path, number, op
                            )
                    except (ValueError, KeyError, TypeError, struct.error):  # (base64: ValueError)
                        # A torn line can only be the last one (a crash mid-write); anything else
                        # means the file was damaged: say so, keep what is readable.
                        log.warning("binding journal %s: line %d unreadable, skipped", self.path, number)
        self._loaded = live
        return dict(live)

    def open(self, live: Iterable[BindingRecord] | None = None) -> None:
        """Compact to ``live`` (default: what :meth:`load` found) and open for appending."""
        records = list(self._loaded.values() if live is None else live)
        self._loaded = {}
        self._rewrite(records)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    # -- running ------------------------------------------------------------------------------------

    def record(
        self,
        added: Iterable[BindingRecord] = (),
        removed: Iterable[tuple[str, str, str]] = (),
        renewed: Iterable[Renewals] = (),
    ) -> None:
        """Append changes with one write(2); call before sending the replies that acknowledge them.
        A removed (or renewed) key that was never added replays to nothing."""
        lines = [
            _ENCODER.encode({"op": "del", "vr": vr, "home_address": home, "care_of_address": coa})
            for vr, home, coa in removed
        ]
        lines.extend(record.to_json() for record in added)
        lines.extend(r.to_json() for r in renewed if r.records)
        if not lines:
            return
        if self._fd is None:
            raise RuntimeError("binding journal is not open")
        self._append(lines)
        self.writes += 1

    def forget_vr(self, vr: str) -> None:
        """A virtual router was removed: drop its bindings from the journal."""
        if self._fd is not None:
            self._append([_ENCODER.encode({"op": "clear-vr", "vr": vr})])

    def _append(self, lines: list[str]) -> None:
        """One write(2) of whole lines; kept for the compacted file when a compaction runs."""
        assert self._fd is not None
        _write_all(self._fd, ("\n".join(lines) + "\n").encode())
        self._records += len(lines)
        if self._carry is not None:
            self._carry.extend(lines)
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()

    def sync_due(self) -> bool:
        return self._dirty_since is not None and time.monotonic() - self._dirty_since >= self.fsync_interval

    def sync(self) -> None:
        """fdatasync what was written (worker thread).  The dirty mark is cleared *before* the call:
        a line written meanwhile marks the file dirty again and is covered by the next sync."""
        with self._fd_lock:
            if self._fd is None or self._dirty_since is None:
                return
            self._dirty_since = None
            os.fdatasync(self._fd)

    def compaction_due(self, live: int) -> bool:
        """The file holds well more records than the ``live`` bindings, and no compaction runs."""
        return (
            self._fd is not None
            and self._carry is None
            and self._records > self.compact_ratio * max(live, self.compact_min)
        )

    def begin_compaction(self) -> None:
        """Start a compaction (event loop): from now on every line written is also kept for the new
        file, so a snapshot of the live bindings taken from now on (even page by page, with
        registrations going on between pages) plus those lines replays to the live set."""
        if self._carry is not None:
            raise RuntimeError("a compaction is already running")
        self._carry = []

    def write_compacted(self, records: list[BindingRecord]) -> int:
        """Write the snapshot to the temporary file and fsync it (worker thread); return its fd."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(self._tmp_path, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a leftover temporary file keeps its mode through O_TRUNC
            for start in range(0, len(records), 4096):
                _write_all(fd, "".join(r.to_json() + "\n" for r in records[start : start + 4096]).encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def finish_compaction(self, fd: int, snapshot: int) -> None:
        """Event loop: append what was written since the snapshot, make the new file the journal
        (rename, directory fsync) and write to it from now on."""
        carry, self._carry = self._carry or [], None
        if self._fd is None:  # closed meanwhile (daemon stopping): keep the old file
            os.close(fd)
            return
        if carry:
            _write_all(fd, ("\n".join(carry) + "\n").encode())
            os.fdatasync(fd)
        os.replace(self._tmp_path, self.path)  # nothing may fail between this and the switch
        with self._fd_lock:
            old, self._fd = self._fd, fd
        os.close(old)
        self._dirty_since = None  # all of it is in the new file, synced
        self._records = snapshot + len(carry)
        self.compactions += 1
        try:
            self._fsync_directory()
        except OSError as exc:  # a power loss may bring the old file back: it holds all but the newest
            log.warning("binding journal: directory fsync failed: %s", exc)

    def abort_compaction(self, fd: int | None = None) -> None:
        """The snapshot could not be written: keep appending to the current file."""
        self._carry = None
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        self._carry = None
        with self._fd_lock:
            if self._fd is not None:
                if self._dirty_since is not None:
                    os.fdatasync(self._fd)
                os.close(self._fd)
                self._fd = None
                self._dirty_since = None

    # -- compaction at start ------------------------------------------------------------------------

    @property
    def _tmp_path(self) -> Path:
        return self.path.with_suffix(self.path.suffix + ".tmp")

    def _rewrite(self, records: list[BindingRecord]) -> None:
        """Rewrite the file as ``records`` (before it is opened for appending: nothing else runs)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = self.write_compacted(records)
        os.close(fd)
        os.replace(self._tmp_path, self.path)
        self._fsync_directory()
        self._records = len(records)

    def _fsync_directory(self) -> None:
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    """write(2) until all of ``data`` is written (a regular file may take it in parts)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
