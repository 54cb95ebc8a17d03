"""The three configuration datastores, their validation and the transaction into running.

An edit changes the datastore in place through an OpLog (server/oplog.py) and is undone when refused:
it costs what it changes. The candidate is a change set over running (an OpLog kept undone, applied
only while it is read, edited or committed) until running changes under it or a whole document is
copied into it; then it is a private tree. `commit_edit` runs the config subscribers (validate →
prepare → abort|apply) with the recorded keyed diff while running already holds the change; a read
meanwhile sees running as it was (the pending OpLog is undone around the read). `commit_running`
swaps in a whole new tree (copy-config, rollback). If anything fails the datastore is exactly as
before. Running is persisted by server/journal.py (a snapshot and a log of commits, fsync'd before
the reply); startup and the confirmed-commit rollback point are written atomically (temp file +
fsync + rename + directory fsync).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from lxml import etree

from server.changes import recorded_diff
from server.edit import EditEngine
from server.errors import RpcError
from server.incremental import IncrementalChecker
from server.journal import Journal, PendingWrite, record_of, write_atomically
from server.oplog import KeyIndex, OpLog, inverse
from server.schema import Schema
from server.subscribers import (
    ConfigSubscriber,
    Transaction,
    abort_transaction,
    apply_transaction,
    run_transaction,
)
from server.tree import Forest, LazyForest, view
from server.xmlns import NC_NS
from server.xmlparse import parse_message

if TYPE_CHECKING:
    import libyang

log = logging.getLogger(__name__)
_MISSING_KEY = re.compile(r'List instance is missing its key "([^"]+)"')
#: rollback.xml naming a position in the running journal instead of holding a configuration
_ROLLBACK_AT = re.compile(rb"<!-- rollback-to journal-seq (\d+) -->")


@dataclass
class RollbackPoint:
    """Running as it was before a confirmed commit: the commits since (their inverse restores it), or
    a whole tree once running was replaced whole (copy-config)."""

    logs: list[OpLog] = field(default_factory=list)
    base: Forest | None = None


DATASTORES = ("running", "candidate", "startup")


class ValidatorLike(Protocol):
    """What server/validation.py's Validator offers (see the lead's contract)."""

    @property
    def ctx(self) -> libyang.Context: ...

    def validate(self, config: etree._Element | bytes | str) -> list: ...


def validation_errors(validator: ValidatorLike, data: Forest, schema: Schema) -> list[RpcError]:
    """Validate a whole tree; map each ValidationError to an RpcError with a resolvable error-path."""
    errs = validator.validate(list(data))  # the top-level elements themselves: no copy
    out = []
    for e in errs:
        nsmap = {}
        if e.path:
            for pfx in set(re.findall(r"([A-Za-z_][\w.-]*):", e.path)):
                ns = schema.module_to_ns.get(pfx) or next(
                    (schema.module_to_ns[m] for m, p in schema.module_prefix.items() if p == pfx), None
                )
                if ns:
                    nsmap[pfx] = ns
        info = (("bad-element", e.bad_element),) if getattr(e, "bad_element", None) else ()
        info += tuple(getattr(e, "info", ()))
        nsmap.update(getattr(e, "nsmap", {}) or {})
        tag = e.tag
        m = _MISSING_KEY.match(e.message)
        if m:  # RFC 6241 names this missing-element, with the key as bad-element
            tag, info = "missing-element", (("bad-element", m.group(1)),)
        out.append(
            RpcError(
                tag,
                e.message,
                type=getattr(e, "type", "application"),
                app_tag=e.app_tag,
                path=e.path,
                path_nsmap=nsmap,
                info=info,
            )
        )
    return out


class Datastores:
    """running / candidate / startup plus the candidate's dirty state and persistence."""

    def __init__(
        self,
        schema: Schema,
        validator: ValidatorLike,
        state_dir: Path | None = None,
        subscribers: list[ConfigSubscriber] | None = None,
    ) -> None:
        self.schema = schema
        self.validator = validator
        self.state_dir = state_dir
        self.subscribers: list[ConfigSubscriber] = subscribers if subscribers is not None else []
        self._running = Forest()
        self.generation = 0  # counts the committed changes of running (it changes in place)
        self.keys = KeyIndex()  # list entries of running by key
        self._pending: OpLog | None = None  # a transaction applied to running, not yet committed
        self.startup = Forest()
        self._candidate: Forest | None = None  # a private candidate tree (None: see _cand_log)
        self._cand_keys = KeyIndex()
        self._cand_log: OpLog | None = None  # the candidate as a change set over running (kept undone)
        self._rollback: RollbackPoint | None = None  # a confirmed commit's, while it is pending
        self.candidate_valid = True
        self.candidate_dirty_by: set[int] = set()  # sessions with uncommitted candidate edits
        self.on_change: list[Callable[[str, Transaction | None], None]] = []
        #: running's snapshot + commit log (server/journal.py)
        self.journal: Journal | None = Journal(state_dir) if state_dir is not None else None
        implemented = tuple(m.name for m in schema.modules if m.implemented)
        self.checker = IncrementalChecker(schema, validator.ctx, implemented)
        self._load()

    # -- persistence ---------------------------------------------------------------------------------
    def _path(self, name: str) -> Path | None:
        return self.state_dir / f"{name}.xml" if self.state_dir else None

    def _load(self) -> None:
        run0, start0 = self._path("running"), self._path("startup")
        #: nothing was persisted before this start (the daemon may seed a startup config)
        self.fresh = not ((run0 is not None and run0.exists()) or (start0 is not None and start0.exists()))
        if start0 is not None and start0.exists():
            self.startup = Forest.from_wrapper(parse_message(start0.read_bytes()))
        rollback = self._path("rollback")
        upto, before = None, None
        if rollback is not None and rollback.exists():
            # a confirmed commit was never confirmed before the server stopped: revert (RFC 6241 §8.4)
            log.warning("unconfirmed commit found at start: restoring the configuration before it")
            data = rollback.read_bytes()
            m = _ROLLBACK_AT.match(data)
            if m is not None:
                upto = int(m.group(1))  # the journal up to that commit
            else:
                before = Forest.from_wrapper(parse_message(data)).to_bytes("config")
        snap, records = self.journal.read(upto) if self.journal is not None else (None, [])
        if before is not None and self.journal is not None:
            self.journal.snapshot(before)  # the commits after the rollback point are dropped with it
            snap, records = before, []
        if snap is not None:
            self.running = Forest.from_wrapper(parse_message(snap))
            self._replay(records)
        elif start0 is not None and start0.exists():
            self.running = self.startup.copy()  # boot from startup (the journal needs its snapshot)
        if upto is not None and self.journal is not None:
            if self.journal.snapshot_seq > upto:
                log.error("the rollback point (commit %d) is older than the snapshot: not restored", upto)
            else:  # the commits after the rollback point are dropped
                self.journal.snapshot(self._running.to_bytes("config"))
        if rollback is not None and rollback.exists():
            rollback.unlink()
        run_path = run0
        errs = validation_errors(self.validator, self.running, self.schema) if len(self.running) else []
        if errs:
            # never overwrite what an operator cannot see: keep the file aside, boot from startup
            aside = run_path.with_name(f"running.invalid-{int(time.time())}.xml") if run_path else None
            log.error(
                "persisted running config is invalid (%s); kept as %s, starting from startup",
                errs[0].message,
                aside,
            )
            if run_path is not None and aside is not None and run_path.exists():
                os.replace(run_path, aside)
            ok = len(self.startup) and not validation_errors(self.validator, self.startup, self.schema)
            self.running = self.startup.copy() if ok else Forest()
        self._candidate = None

    def _replay(self, records: list[bytes]) -> None:
        """The journal's commits after the snapshot, in order (each was valid when committed)."""
        for i, rec in enumerate(records):
            log_ = OpLog(self.keys)
            errs = EditEngine(self.schema, log=log_).apply(self._running, parse_message(rec), "merge")
            self.keys.forget_small()
            if errs:
                log.error(
                    "journal record %d of %d does not replay (%s): stopped there",
                    i + 1,
                    len(records),
                    errs[0],
                )
                log_.undo()
                break

    @property
    def running(self) -> Forest:
        return self._running

    @running.setter
    def running(self, forest: Forest) -> None:
        self.generation += 1
        self._running = forest
        self.keys = KeyIndex()
        self._pending = None

    @property
    def candidate(self) -> Forest:
        """The candidate as a tree: running itself until someone edits it; a change set is
        materialised by a copy (reads that must not copy use `reading("candidate")`)."""
        if self._candidate is not None:
            return self._candidate
        if self._cand_log is not None:
            with self.reading("candidate") as data:
                return data.copy()
        return self.running

    @contextmanager
    def reading(self, name: str) -> Iterator[Forest]:
        """The datastore `name` as it stands for readers, for synchronous use only: running without
        a pending transaction's change, the candidate with its change set applied."""
        if name not in DATASTORES:
            raise RpcError("invalid-value", f"unknown datastore {name}", type="protocol")
        if name == "candidate" and self._candidate is not None:
            yield self._candidate
            return
        if name == "candidate" and self._cand_log is not None and self._pending is not self._cand_log:
            self._cand_log.redo()
            try:
                yield self._running
            finally:
                self._cand_log.undo()
            return
        if name == "startup":
            yield self.startup
            return
        pending = self._pending
        if (
            pending is not None
            and pending.applied
            and not (name == "candidate" and pending is self._cand_log)
        ):
            pending.undo()
            try:
                yield self._running
            finally:
                pending.redo()
            return
        yield self._running

    # -- in-place edits ------------------------------------------------------------------------------
    def begin_edit(self, target: str) -> tuple[Forest, OpLog]:
        """The tree an edit of `target` mutates in place and the OpLog recording it. The caller ends
        with `end_edit` (keep the candidate's change) or `abort_edit`, or, for running, `commit_edit`."""
        if target == "running":
            self._materialise_candidate()
            return self._running, OpLog(self.keys)
        if self._candidate is not None:
            return self._candidate, OpLog(self._cand_keys)
        if self._cand_log is not None:
            self._cand_log.redo()
        return self._running, OpLog(self.keys)

    def abort_edit(self, target: str, log: OpLog) -> None:
        """Undo an edit begun with begin_edit (nothing of it stays)."""
        log.undo()
        if target == "candidate" and self._candidate is None and self._cand_log is not None:
            self._cand_log.undo()
        self.keys.forget_small()

    def end_edit_candidate(self, log: OpLog, session_id: int, *, validated: bool) -> None:
        """Keep a candidate edit: a private tree keeps it; otherwise it joins the change set, undone."""
        if self._candidate is None:
            log.undo()
            if self._cand_log is not None:
                self._cand_log.undo()
                self._cand_log.extend(log)
            else:
                self._cand_log = log
            self._cand_log.applied = False
        self.keys.forget_small()
        self.candidate_valid = self.candidate_valid and validated
        self.candidate_dirty_by.add(session_id)
        for cb in self.on_change:
            cb("candidate", None)

    def _materialise_candidate(self) -> None:
        """Running is about to change under a candidate change set: the candidate becomes a tree."""
        if self._cand_log is not None and self._candidate is None:
            with self.reading("candidate") as data:
                self._candidate = data.copy()
            self._cand_log = None

    def changes_of(self, log: OpLog, forest: Forest | None = None):
        """The keyed diff an applied OpLog made (for a candidate change set: apply it first)."""
        return recorded_diff(log, self.schema, forest if forest is not None else self._running)

    def persist(self, name: str) -> None:
        if name == "running":
            if self.journal is not None:
                self.journal.snapshot(self._running.to_bytes("config"))
            return
        self._write_atomically(name, getattr(self, name))

    def _begin_log(self, changes) -> tuple[PendingWrite, int] | None:
        """The first commit of a state directory writes the snapshot instead of a journal record: it is
        started before the subscribers run (written and fsync'd in a thread meanwhile)."""
        if self.journal is None or not changes or self.journal.exists():
            return None
        data = self._running.to_bytes("config")
        try:
            return self.journal.begin_snapshot(data), len(data)
        except OSError:
            return None  # _log_commit writes it in place and reports the failure

    def _log_commit(self, changes, snapshot: tuple[PendingWrite, int] | None) -> None:
        """Make a committed change durable before it is acknowledged: one journal record, or the
        snapshot begun by `_begin_log`."""
        if self.journal is None or not changes:
            return
        if snapshot is not None:
            self.journal.end_snapshot(*snapshot)
        elif not self.journal.exists():
            self.journal.snapshot(self._running.to_bytes("config"))
        else:
            self.journal.append(record_of(changes, self.schema))

    def _maybe_compact(self) -> None:
        j = self.journal
        if j is None or (self._rollback is not None and self._rollback.base is None):
            return  # rollback.xml names a commit of the journal: it stays until the point is gone
        j.finish_compaction()
        if j.needs_compaction():
            j.compact(self._running.to_bytes("config"))  # the bytes now, the disk work in a thread

    def close(self) -> None:
        """Wait for a background compaction and close the journal."""
        if self.journal is not None:
            self.journal.close()

    def _write_atomically(self, name: str, forest: Forest) -> None:
        p = self._path(name)
        if p is not None:
            write_atomically(p, [b'<?xml version="1.0" encoding="UTF-8"?>\n', forest.to_bytes("config")])

    # -- the confirmed commit's rollback point ---------------------------------------------------------
    def begin_rollback(self) -> None:
        """Running as it is now becomes the rollback point of a confirmed commit: in memory the commits
        from now on are kept (their inverse restores it, costing what they changed); on disk
        rollback.xml names the journal's last commit (written before the confirmed commit; the
        journal is not compacted meanwhile), or holds the configuration when there is no journal yet."""
        self._rollback = RollbackPoint()
        j = self.journal
        p = self._path("rollback")
        if j is None or p is None:
            return
        j.wait()
        if j.exists():
            write_atomically(p, [b"<!-- rollback-to journal-seq %d -->\n" % j.seq])
        else:
            self._write_atomically("rollback", self._running)

    def end_rollback(self) -> None:
        """The confirmed commit is confirmed (or its rollback done): forget the point."""
        self._rollback = None
        p = self._path("rollback")
        if p is not None:
            p.unlink(missing_ok=True)

    async def rollback(self) -> None:
        """Restore the rollback point (the caller holds the transaction lock): the inverse of the
        commits since, as one transaction, or the whole tree kept when running was replaced. The
        candidate is reset. Raises the refusal's RpcError (running then keeps the unconfirmed
        configuration)."""
        point = self._rollback
        self._rollback = None
        try:
            if point is None:
                return
            if point.base is not None:
                await self.commit_running(point.base, session_id=0, validate=False)
                return
            self.reset_candidate()  # discarded by a rollback anyway: no copy of a change set over running
            undo = inverse(point.logs, self.keys)
            self.keys.forget_small()
            await self.commit_edit(undo, session_id=0, validate=False)
        finally:
            self.end_rollback()

    def _rollback_swapped(self, old: Forest) -> None:
        """Running was replaced whole while a rollback point is kept: the old tree, with the commits
        since the point undone, is the point now (and on disk: the journal was restarted)."""
        point = self._rollback
        if point is None or point.base is not None:
            return
        for log_ in reversed(point.logs):
            log_.undo()
        point.base, point.logs = old, []
        try:
            self._write_atomically("rollback", old)
        except OSError:
            log.exception("cannot write the confirmed commit's rollback point")

    # -- access --------------------------------------------------------------------------------------
    def get(self, name: str) -> Forest:
        if name not in DATASTORES:
            raise RpcError("invalid-value", f"unknown datastore {name}", type="protocol")
        return getattr(self, name)

    def validate(self, data: Forest) -> list[RpcError]:
        """Whole-document validation (<validate>, copy-config, the first load)."""
        return validation_errors(self.validator, data, self.schema)

    def validate_change(self, forest: Forest, log: OpLog) -> list[RpcError]:
        """Validation of a valid `forest` changed by `log` (applied): what the change touches
        (server/incremental.py), the whole document when that is not smaller."""
        partial = self.checker.partial(forest, log)
        if partial is None:
            return self.validate(forest)
        return validation_errors(self.validator, view(partial), self.schema) if partial else []

    def validate_edit(self, target: str, log: OpLog) -> list[RpcError]:
        """Validation of an edit begun with begin_edit (applied): running and a change-set candidate
        are checked incrementally against running (always valid); a private candidate tree only
        when it was valid before."""
        if target == "candidate" and self._candidate is not None:
            if not self.candidate_valid:
                return self.validate(self._candidate)
            return self.validate_change(self._candidate, log)
        if target == "candidate" and self._cand_log is not None:
            both = OpLog(self.keys, [*self._cand_log.ops, *log.ops])
            return self.validate_change(self._running, both)
        return self.validate_change(self._running, log)

    # -- writes --------------------------------------------------------------------------------------
    async def commit_running(
        self, new: Forest, *, session_id: int = 0, user: str = "", validate: bool = True
    ) -> None:
        """The one way running changes: validate, subscribers, swap, persist. Raise RpcError on refusal.

        The caller holds the core's transaction lock. Until the swap, running is the old tree (reads
        see it); a cancellation before the swap aborts the prepared subscribers and leaves running as
        it was; once swapped, apply runs to its end."""
        if validate:
            errs = self.validate(new)
            if errs:
                raise _raise_all(errs)
        self._materialise_candidate()
        txn = Transaction(old=self.running, new=new, schema=self.schema, session_id=session_id, user=user)
        await run_transaction(self.subscribers, txn)
        self.running = new
        try:
            self.persist("running")
        except OSError as exc:
            # apply has not run yet: undo cleanly (subscribers get abort) and report
            self.running = txn.old
            await abort_transaction(self.subscribers, txn)
            raise RpcError("operation-failed", f"cannot persist running: {exc}") from exc
        try:
            await apply_transaction(self.subscribers, txn)
        finally:
            for cb in self.on_change:
                cb("running", txn)
            self._rollback_swapped(txn.old)

    async def commit_edit(
        self, log: OpLog, *, session_id: int = 0, user: str = "", validate: bool = True
    ) -> None:
        """Commit a change applied in place to running (`log`: an edit of running, or the candidate's
        change set): validate what it touches, subscribers with the recorded diff, persist. On refusal
        the change is undone and running is exactly as before."""
        if not log.applied:
            log.redo()
        self._pending = log
        snapshot = None
        try:
            changes = self.changes_of(log)
            if validate:
                errs = self.validate_change(self._running, log)
                if errs:
                    raise _raise_all(errs)
            snapshot = self._begin_log(changes)
            txn = Transaction(
                old=LazyForest(lambda: self._old_of(log)),
                new=self._running,
                schema=self.schema,
                session_id=session_id,
                user=user,
                changes=changes,
            )
            await run_transaction(self.subscribers, txn)
            try:
                snapshot, pending = None, snapshot
                self._log_commit(changes, pending)
            except OSError as exc:
                await abort_transaction(self.subscribers, txn)
                raise RpcError("operation-failed", f"cannot persist running: {exc}") from exc
        except BaseException:
            if snapshot is not None:
                snapshot[0].cancel()
            if self._pending is log:
                log.undo()
                self._pending = None
            self.keys.forget_small()
            raise
        self._pending = None
        self.generation += 1
        self.keys.forget_small()
        if self._rollback is not None and self._rollback.base is None:
            self._rollback.logs.append(log)
        if self._cand_log is log:
            self._cand_log = None
        try:
            await apply_transaction(self.subscribers, txn)
        finally:
            for cb in self.on_change:
                cb("running", txn)
            self._maybe_compact()

    async def commit_candidate(self, *, session_id: int = 0, user: str = "") -> None:
        """<commit>: the candidate's change set is applied to running in place (a private candidate
        tree replaces running whole). Validation only when the candidate was not validated."""
        validate = not self.candidate_valid
        if self._candidate is not None:
            new, self._candidate = self._candidate, None
            await self.commit_running(new, session_id=session_id, user=user, validate=validate)
            return
        log = self._cand_log if self._cand_log is not None else OpLog(self.keys, applied=False)
        await self.commit_edit(log, session_id=session_id, user=user, validate=validate)

    def _old_of(self, log: OpLog) -> Forest:
        """Running before `log` (a copy), while `log` is the pending change."""
        if self._pending is not log:
            raise RuntimeError("txn.old of a finished transaction")
        with self.reading("running") as data:
            return data.copy()

    async def replay_running(self) -> None:
        """Bring the subscribers up from the current running: one transaction from an empty config
        (sysrepo's ENABLED event) through validate → prepare → apply. Raises the refusal's RpcError
        (after aborting the prepared subscribers); running itself is never changed."""
        txn = Transaction(old=Forest(), new=self.running, schema=self.schema)
        await run_transaction(self.subscribers, txn)
        await apply_transaction(self.subscribers, txn)

    def set_candidate(self, new: Forest, session_id: int, *, validated: bool = False) -> None:
        """`validated`: the whole new candidate was just validated (commit need not do it again)."""
        self._candidate = new
        self._cand_keys = KeyIndex()
        self._cand_log = None
        self.candidate_valid = validated
        self.candidate_dirty_by.add(session_id)
        for cb in self.on_change:
            cb("candidate", None)

    def reset_candidate(self) -> None:
        self._candidate = None
        self._cand_keys = KeyIndex()
        self._cand_log = None
        self.candidate_valid = True  # it mirrors running, which is valid
        self.candidate_dirty_by.clear()

    def set_startup(self, new: Forest, *, validate: bool = True) -> None:
        if validate:
            errs = self.validate(new)
            if errs:
                raise _raise_all(errs)
        self.startup = new
        self.persist("startup")
        for cb in self.on_change:
            cb("startup", None)

    def delete_startup(self) -> None:
        self.startup = Forest()
        p = self._path("startup")
        if p is not None:
            p.unlink(missing_ok=True)


def _raise_all(errs: list[RpcError]) -> RpcError:
    from server.errors import combine

    return combine(errs)


def config_from(el: etree._Element) -> Forest:
    """The Forest of an inline <config> element."""
    if el.tag != f"{{{NC_NS}}}config":
        raise RpcError("bad-element", "expected <config>", type="protocol", info=(("bad-element", "config"),))
    return Forest.from_wrapper(el)
