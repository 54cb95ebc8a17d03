"""The three configuration datastores, their validation and the transaction into running.

An edit always works on a copy. `commit_running` validates the whole new tree with the Validator,
runs the config subscribers (validate → prepare → abort|apply) and only then swaps the new tree in and
persists it; if anything fails the datastore is exactly as before. Running and startup are written
atomically (temp file + fsync + rename + directory fsync) to the state directory and reloaded on start.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from lxml import etree

from server.errors import RpcError
from server.schema import Schema
from server.subscribers import (
    ConfigSubscriber,
    Transaction,
    abort_transaction,
    apply_transaction,
    run_transaction,
)
from server.tree import Forest
from server.xmlns import NC_NS
from server.xmlparse import parse_message

log = logging.getLogger(__name__)
_MISSING_KEY = re.compile(r'List instance is missing its key "([^"]+)"')
DATASTORES = ("running", "candidate", "startup")


class ValidatorLike(Protocol):
    """What server/validation.py's Validator offers (see the lead's contract)."""

    ctx: object

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
        self.running = Forest()
        self.startup = Forest()
        self._candidate: Forest | None = None  # None: the candidate mirrors running
        self.candidate_valid = True
        self.candidate_dirty_by: set[int] = set()  # sessions with uncommitted candidate edits
        self.on_change: list[Callable[[str, Transaction | None], None]] = []
        self._load()

    # -- persistence ---------------------------------------------------------------------------------
    def _path(self, name: str) -> Path | None:
        return self.state_dir / f"{name}.xml" if self.state_dir else None

    def _load(self) -> None:
        run0, start0 = self._path("running"), self._path("startup")
        #: nothing was persisted before this start (the daemon may seed a startup config)
        self.fresh = not ((run0 is not None and run0.exists()) or (start0 is not None and start0.exists()))
        rollback = self._path("rollback")
        if rollback is not None and rollback.exists():
            # a confirmed commit was never confirmed before the server stopped: revert (RFC 6241 §8.4)
            log.warning("unconfirmed commit found at start: restoring the configuration before it")
            os.replace(rollback, self._path("running"))
        for name in ("startup", "running"):
            p = self._path(name)
            if p is not None and p.exists():
                root = parse_message(p.read_bytes())
                setattr(self, name, Forest.from_wrapper(root))
        run_path, start_path = self._path("running"), self._path("startup")
        if run_path is not None and not run_path.exists() and start_path is not None and start_path.exists():
            self.running = self.startup.copy()  # boot from startup
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

    @property
    def candidate(self) -> Forest:
        """The candidate: running itself until someone edits it (then a private copy)."""
        return self._candidate if self._candidate is not None else self.running

    def persist(self, name: str) -> None:
        self._write_atomically(name, getattr(self, name))

    def _write_atomically(self, name: str, forest: Forest) -> None:
        p = self._path(name)
        if p is None:
            return
        data = forest.to_bytes("config")
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=p.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b'<?xml version="1.0" encoding="UTF-8"?>\n')
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
            dfd = os.open(p.parent, os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def save_rollback(self, data: Forest) -> None:
        """Keep the pre-confirmed-commit configuration on disk until the commit is confirmed."""
        self._write_atomically("rollback", data)

    def clear_rollback(self) -> None:
        p = self._path("rollback")
        if p is not None:
            p.unlink(missing_ok=True)

    # -- access --------------------------------------------------------------------------------------
    def get(self, name: str) -> Forest:
        if name not in DATASTORES:
            raise RpcError("invalid-value", f"unknown datastore {name}", type="protocol")
        return getattr(self, name)

    def validate(self, data: Forest) -> list[RpcError]:
        return validation_errors(self.validator, data, self.schema)

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
        self.candidate_valid = validated
        self.candidate_dirty_by.add(session_id)
        for cb in self.on_change:
            cb("candidate", None)

    def reset_candidate(self) -> None:
        self._candidate = None
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
