"""Confirmed commit (RFC 6241 §8.4): the pending commit, who may confirm it, its timer and rollback.

The rollback point is running as it was before the first confirmed commit (Datastores.begin_rollback):
the commits since are kept and their inverse restores it, so a rollback costs what the commits
changed, not a copy of 100k entries; `<state_dir>/rollback.xml` names the journal's commit it
stands at until the commit is confirmed or cancelled (a server that stops first starts from there).
A follow-up confirmed commit extends the timeout; a plain commit confirms. Without `persist` only
the issuing session may confirm and its end rolls back; with `persist`, any session presenting the
`persist-id`. Rollbacks that no RPC asks for (timeout, the session's end) run as background tasks
under the core's transaction lock.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from server import notifications as ev
from server.errors import RpcError

if TYPE_CHECKING:
    from server.core import NetconfCore
    from server.protocol import NetconfSession

log = logging.getLogger(__name__)


@dataclass
class PendingConfirm:
    """A confirmed commit awaiting its confirming commit."""

    session_id: int
    persist: str | None
    timeout: int
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


def _bad_persist_id(message: str) -> RpcError:
    return RpcError("invalid-value", message, type="protocol", info=(("bad-element", "persist-id"),))


def _owned_by(session_id: int, message: str) -> RpcError:
    return RpcError("in-use", message, type="protocol", info=(("session-id", str(session_id)),))


class ConfirmedCommit:
    """The confirmed-commit state of one server."""

    def __init__(self, core: NetconfCore) -> None:
        self.core = core
        self.pending: PendingConfirm | None = None

    def check(self, sess: NetconfSession, persist_id: str | None) -> None:
        """May `sess` commit now (with this persist-id)? Raises the RFC's error otherwise."""
        p = self.pending
        if p is None:
            if persist_id is not None:
                raise _bad_persist_id("no confirmed commit with that persist-id")
        elif p.persist is not None:
            if persist_id != p.persist:
                raise _bad_persist_id("a persistent confirmed commit is pending: give its persist-id")
        elif sess.id != p.session_id:
            raise _owned_by(p.session_id, f"a confirmed commit of session {p.session_id} is pending")
        elif persist_id is not None:
            raise _bad_persist_id("no persistent confirmed commit is pending")

    def committed(
        self,
        sess: NetconfSession,
        *,
        confirmed: bool,
        timeout: int,
        persist: str | None,
    ) -> None:
        """Bookkeeping after the candidate went into running: start (the rollback point was taken
        before the commit), extend or complete."""
        core, p = self.core, self.pending
        if confirmed:
            if p is None:
                p = self.pending = PendingConfirm(sess.id, persist, timeout)
                event = "start"
            else:
                p.persist, p.timeout = persist, timeout
                if p.timer is not None:
                    p.timer.cancel()
                event = "extend"
            p.timer = core.event_loop().call_later(timeout, self._timeout)
            core.events.publish(
                ev.confirmed_commit(event, sess.principal.user, sess.id, sess.source_host, timeout)
            )
            if persist is None and sess.closed:
                # the session ended while this commit was being applied: nobody can confirm it
                core.spawn(self._rollback_when_free(p, "cancel"), "rollback after session loss")
        elif p is not None:
            if p.timer is not None:
                p.timer.cancel()
            self.pending = None
            core.ds.end_rollback()
            core.events.publish(
                ev.confirmed_commit("complete", sess.principal.user, sess.id, sess.source_host, None)
            )

    async def cancel(self, sess: NetconfSession, persist_id: str | None) -> None:
        """<cancel-commit>. The caller holds the transaction lock."""
        p = self.pending
        if p is None:
            raise RpcError("invalid-value", "no confirmed commit is pending", type="protocol")
        if p.persist is not None:
            if persist_id != p.persist:
                raise _bad_persist_id("persist-id does not match")
        elif sess.id != p.session_id:
            raise _owned_by(p.session_id, f"the confirmed commit belongs to session {p.session_id}")
        await self._rollback("cancel", sess)

    def session_ended(self, sess: NetconfSession) -> None:
        """A session ended: its non-persistent confirmed commit is rolled back."""
        p = self.pending
        if p is not None and p.persist is None and p.session_id == sess.id:
            log.warning("session %d ended during a confirmed commit: rolling back", sess.id)
            if p.timer is not None:
                p.timer.cancel()
            self.core.spawn(self._rollback_when_free(p, "cancel"), "rollback after session loss")

    def close(self) -> None:
        if self.pending is not None and self.pending.timer is not None:
            self.pending.timer.cancel()

    def _timeout(self) -> None:
        p = self.pending
        if p is not None:
            log.warning("confirmed commit not confirmed within %ds: rolling back", p.timeout)
            self.core.spawn(self._rollback_when_free(p, "timeout"), "confirmed-commit timeout rollback")

    async def _rollback_when_free(self, p: PendingConfirm, event: str) -> None:
        """Background rollback: wait for the transaction lock; nothing to do if `p` was confirmed or
        cancelled meanwhile."""
        async with self.core.txn_lock:
            if self.pending is p:
                await self._rollback(event, None)

    async def _rollback(self, event: str, sess: NetconfSession | None) -> None:
        """Restore the configuration before the confirmed commit. Caller holds `txn_lock`."""
        core, p = self.core, self.pending
        if p is None:
            return
        self.pending = None
        if p.timer is not None:
            p.timer.cancel()
        try:
            await core.ds.rollback()
        except RpcError as err:
            # nothing sensible is left to retry: running keeps the unconfirmed configuration
            log.error(
                "ROLLBACK FAILED: a subscriber refused to restore the configuration before the "
                "confirmed commit (%s); running keeps the unconfirmed configuration",
                err,
            )
        core.ds.reset_candidate()
        if sess is not None and event == "cancel" and sess.id in core.sessions:
            who = (sess.principal.user, sess.id, sess.source_host)
        else:
            who = ("", 0, None)
        core.events.publish(ev.confirmed_commit(event, *who, None))
        core.events.publish(ev.config_change("running", "", 0, None, [], {}))
