"""State shared by all sessions: datastores, locks, confirmed commit, notifications, monitoring.

Transport-free; the only clock-driven part, the confirmed-commit timeout, uses the running asyncio
loop's `call_later` so that the rollback happens even when no session is active.

Every change of a configuration datastore (and lock/unlock) runs under one asyncio lock,
`txn_lock`, so a transaction whose subscribers await kernel work is never interleaved with another;
reads take no lock and see running as it was before the pending transaction. Rollbacks that no RPC
asks for (confirm timeout, loss of the confirming session) run as background tasks under that lock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lxml import etree

from server import notifications as ev
from server.actions import YANG_NS, ActionHandler, Actions
from server.configured import Configured
from server.confirmed import ConfirmedCommit, PendingConfirm
from server.datastore import Datastores, ValidatorLike
from server.defaults import WithDefaults
from server.errors import RpcError
from server.monitoring import GlobalStats, LockInfo, SessionInfo, netconf_state, yang_library
from server.nacm import NACM_NS, Nacm
from server.operational import OperationalProvider, StateRequest
from server.operations import HANDLERS, Handler
from server.push import ChangeFeed, ConfigChanges
from server.schema import Schema
from server.statedata import filter_roots, merge_into, merge_state, strip_config
from server.subscribers import ConfigSubscriber
from server.subscription_input import SN_NS
from server.subscriptions import Subscriptions
from server.tree import Forest
from server.xmlns import (
    CAP_CANDIDATE,
    CAP_CONFIRMED,
    CAP_INTERLEAVE,
    CAP_NOTIFICATION,
    CAP_ROLLBACK,
    CAP_VALIDATE,
    CAP_WITH_DEFAULTS,
    CAP_XPATH,
    CAP_YANG_LIBRARY,
    MON_NS,
    NC_BASE_10,
    NC_BASE_11,
    NC_NS,
    YANGLIB_NS,
)
from server.xmlparse import parse_message

if TYPE_CHECKING:
    from server.protocol import NetconfSession

log = logging.getLogger(__name__)
CAP_WRITABLE_RUNNING = "urn:ietf:params:netconf:capability:writable-running:1.0"


class NetconfCore:
    """Everything sessions share. Create once per server; `close()` cancels timers."""

    def __init__(
        self,
        schema: Schema,
        validator: ValidatorLike,
        *,
        state_dir: Path | None = None,
        superuser_group: str = "admin",
        max_message_size: int = 64 * 1024 * 1024,
        event_log_size: int = 1000,
        subscribers: list[ConfigSubscriber] | None = None,
        providers: list[OperationalProvider] | None = None,
    ) -> None:
        self.schema = schema
        self.max_message_size = max_message_size
        #: on-change changes in (the commit path's diff, the application's state changes): server/push.py
        self.feed = ChangeFeed(schema)
        #: RFC 8639 configured subscriptions: /sn:subscriptions in running (server/configured.py)
        self.configured = Configured(self)
        internal: list[ConfigSubscriber] = [self.configured, ConfigChanges(self.feed)]
        self.ds = Datastores(schema, validator, state_dir, [*(subscribers or []), *internal])
        self.nacm = Nacm(
            schema, superuser_group, running=lambda: self.ds.running, generation=lambda: self.ds.generation
        )
        self.wd = WithDefaults(schema)
        self.events = ev.EventLog(event_log_size)
        self.sessions: dict[int, NetconfSession] = {}
        self.locks: dict[str, tuple[int, dt.datetime]] = {}
        self.stats = GlobalStats()
        self.providers: list[OperationalProvider] = providers if providers is not None else []
        self.rpc_handlers: dict[tuple[str, str], Handler] = dict(HANDLERS)
        self.subscriptions = Subscriptions(self)  # RFC 8639 / RFC 8641 dynamic subscriptions
        self.rpc_handlers.update(self.subscriptions.handlers())
        self.subscriptions.configured_state = self.configured.state
        #: YANG 1.1 actions (server/actions.py): the <action> operation and its handlers by schema path
        self.actions = Actions(self)
        self.rpc_handlers[(YANG_NS, "action")] = self.actions.run
        for path, action in self.configured.actions().items():
            if self.actions.exists(path):  # the reset action needs the configured feature
                self.actions.register(path, action)
        self.confirmed = ConfirmedCommit(self)
        #: serialises every configuration change (see the module docstring)
        self.txn_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()  # background rollbacks, kept until done
        self._next_id = 1
        self.loop: asyncio.AbstractEventLoop | None = None  # default: the running loop
        self.capabilities = self._capabilities()
        self._hello_caps = self._hello_template()

    def event_loop(self) -> asyncio.AbstractEventLoop:
        return self.loop or asyncio.get_running_loop()

    # -- hello / capabilities ------------------------------------------------------------------------
    def _capabilities(self) -> list[str]:
        caps = [
            NC_BASE_10,
            NC_BASE_11,
            CAP_WRITABLE_RUNNING,
            CAP_CANDIDATE,
            CAP_CONFIRMED,
            "urn:ietf:params:netconf:capability:confirmed-commit:1.0",
            CAP_ROLLBACK,
            CAP_VALIDATE,
            "urn:ietf:params:netconf:capability:validate:1.0",
            CAP_XPATH,
            CAP_NOTIFICATION,
            CAP_INTERLEAVE,
            CAP_WITH_DEFAULTS,
        ]
        caps.append(f"{CAP_YANG_LIBRARY}?revision=2019-01-04&content-id={self.schema.content_id}")
        for m in self.schema.modules:
            if not m.implemented:
                continue
            cap = f"{m.namespace}?module={m.name}"
            if m.revision:
                cap += f"&revision={m.revision}"
            if m.features:
                cap += "&features=" + ",".join(m.features)
            caps.append(cap)
        return caps

    def _hello_template(self) -> bytes:
        hello = etree.Element(f"{{{NC_NS}}}hello", nsmap={None: NC_NS})
        caps = etree.SubElement(hello, f"{{{NC_NS}}}capabilities")
        for c in self.capabilities:
            etree.SubElement(caps, f"{{{NC_NS}}}capability").text = c
        etree.SubElement(hello, f"{{{NC_NS}}}session-id").text = "SESSIONID"
        return etree.tostring(hello)

    def hello_bytes(self, session_id: int) -> bytes:
        return self._hello_caps.replace(b"SESSIONID", str(session_id).encode())

    # -- sessions ------------------------------------------------------------------------------------
    def new_session_id(self) -> int:
        sid = self._next_id
        self._next_id += 1
        return sid

    def register(self, sess: NetconfSession) -> None:
        self.sessions[sess.id] = sess
        self.stats.in_sessions += 1
        self.events.publish(ev.session_start(sess.principal.user, sess.id, sess.source_host))

    def unregister(self, sess: NetconfSession, reason: str, killed_by: int | None = None) -> None:
        if self.sessions.pop(sess.id, None) is None:
            return
        if reason in ("dropped", "other"):
            self.stats.dropped_sessions += 1
        if sess.subscription is not None:
            sess.subscription.cancel()
        self.subscriptions.session_ended(sess)
        for name, (holder, _t) in list(self.locks.items()):
            if holder == sess.id:
                del self.locks[name]
                if name == "candidate":
                    self.ds.reset_candidate()  # RFC 6241 §8.3.5.2: uncommitted changes discarded
        self.confirmed.session_ended(sess)
        self.events.publish(ev.session_end(sess.principal.user, sess.id, sess.source_host, reason, killed_by))

    def kill(self, sid: int, by: int) -> None:
        target = self.sessions.get(sid)
        if target is not None:
            target.terminate("killed", killed_by=by)

    def session_infos(self) -> list[SessionInfo]:
        return [
            SessionInfo(s.id, s.principal.user, s.source_host, s.login_time, s.counters)
            for s in self.sessions.values()
        ]

    # -- locks ---------------------------------------------------------------------------------------
    def lock(self, sess: NetconfSession, name: str) -> None:
        holder = self.locks.get(name)
        if holder is not None:
            raise RpcError(
                "lock-denied",
                f"{name} is already locked by session {holder[0]}",
                type="protocol",
                info=(("session-id", str(holder[0])),),
            )
        if name == "candidate" and self.ds.candidate_dirty_by - {sess.id}:
            raise RpcError(
                "lock-denied",
                "the candidate has uncommitted changes of another session",
                type="protocol",
                info=(("session-id", "0"),),
            )
        self.locks[name] = (sess.id, dt.datetime.now(dt.UTC))

    def unlock(self, sess: NetconfSession, name: str) -> None:
        holder = self.locks.get(name)
        if holder is None or holder[0] != sess.id:
            raise RpcError(
                "operation-failed",
                f"{name} is not locked by this session",
                type="protocol",
                info=(("session-id", str(holder[0] if holder else 0)),),
            )
        del self.locks[name]

    def lock_infos(self) -> list[LockInfo]:
        return [LockInfo(n, sid, t) for n, (sid, t) in self.locks.items()]

    # -- commit / confirmed commit -------------------------------------------------------------------
    def check_lock(self, sess: NetconfSession, name: str) -> None:
        """in-use when another session holds the lock on datastore `name` (RFC 6241 §7.5)."""
        holder = self.locks.get(name)
        if holder is not None and holder[0] != sess.id:
            raise RpcError(
                "in-use",
                f"{name} is locked by session {holder[0]}",
                type="protocol",
                info=(("session-id", str(holder[0])),),
            )

    @property
    def pending(self) -> PendingConfirm | None:
        """The confirmed commit awaiting confirmation, if any (server/confirmed.py)."""
        return self.confirmed.pending

    async def commit(
        self,
        sess: NetconfSession,
        *,
        confirmed: bool,
        timeout: int,
        persist: str | None,
        persist_id: str | None,
    ) -> None:
        """<commit>: the candidate into running, with the confirmed-commit rules (RFC 6241 §8.4)."""
        self.check_lock(sess, "running")
        self.check_lock(sess, "candidate")
        self.confirmed.check(sess, persist_id)
        starting = confirmed and self.pending is None
        if starting:  # running as it is now is the rollback point (server/confirmed.py)
            self.ds.begin_rollback()
        try:
            await self.ds.commit_candidate(session_id=sess.id, user=sess.principal.user)
        except BaseException:
            if starting:
                self.ds.end_rollback()
            raise
        self.ds.reset_candidate()
        self.publish_config_change(sess, "running", [])
        self.confirmed.committed(sess, confirmed=confirmed, timeout=timeout, persist=persist)

    async def cancel_commit(self, sess: NetconfSession, persist_id: str | None) -> None:
        await self.confirmed.cancel(sess, persist_id)

    # -- notifications -------------------------------------------------------------------------------
    def subscribe(self, sess: NetconfSession, **kw) -> None:
        sub = ev.Subscription(
            self.events,
            sess.send_notification,
            self.schema,
            allow=lambda body: self.nacm.may_receive(sess.principal, body),
            **kw,
        )
        sess.subscription = sub
        # the <ok/> reply must precede any notification: start after the current message is answered
        self.event_loop().call_soon(lambda: None if sess.closed else sub.begin(ev.utcnow()))
        if sub.stop is not None:
            delay = (sub.stop - ev.utcnow()).total_seconds()
            if delay > 0:
                self.event_loop().call_later(delay, lambda: sub.finish(ev.utcnow()))

    def seed(self, config_xml: bytes) -> bool:
        """First start only, before `replay_running`: install a bootstrap configuration (a <config>
        document) as startup and running, validated and persisted. The subscribers are not called:
        `replay_running` brings them up from whatever running holds. Returns False (and changes
        nothing) when the state directory already held datastores. Raises RpcError when the document
        is invalid (nothing is written then)."""
        if not self.ds.fresh:
            return False
        data = Forest.from_wrapper(parse_message(config_xml))
        self.ds.set_startup(data.copy())  # validates; raises before anything is written
        self.ds.running = data
        self.ds.reset_candidate()
        self.ds.persist("running")
        self.ds.fresh = False
        return True

    async def replay_running(self) -> None:
        """At start, before serving: run one transaction from an empty configuration to the current
        running through every subscriber (validate → prepare → apply; sysrepo's ENABLED event).
        A refusal raises its RpcError after the prepared subscribers got abort; running and the
        files are left as they are, so the daemon can report it and exit."""
        async with self.txn_lock:
            await self.ds.replay_running()

    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task:
        """Run `coro` as a background task that is kept until done; a failure is logged loudly."""
        task = self.event_loop().create_task(coro, name=what)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("%s FAILED", what, exc_info=t.exception())

        task.add_done_callback(done)
        return task

    async def wait_idle(self) -> None:
        """Wait for the background tasks (rollbacks) spawned so far, including ones they spawn."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def register_rpc(self, namespace: str, name: str, handler: Handler) -> None:
        """For the daemon: serve a YANG rpc (e.g. mipha clear-bindings). The handler gets the session
        and the rpc's element, returns None (<ok/>) or an element/bytes for the reply, raises RpcError.
        It may be a coroutine function (or return an awaitable): the session awaits it; its later RPCs
        wait, other sessions do not. It runs without `txn_lock` (take it to touch configuration)."""
        if (namespace, name) in self.rpc_handlers:
            raise ValueError(f"rpc {name} in {namespace} already has a handler")
        self.rpc_handlers[(namespace, name)] = handler

    def register_action(self, path: str, handler: ActionHandler) -> None:
        """For the daemon: serve a YANG 1.1 action, named by its schema path (module names where the
        module changes, e.g. `/ietf-subscribed-notifications:subscriptions/subscription/receivers/
        receiver/reset`). The handler gets the session and an `ActionRequest` (server/actions.py:
        the validated request, the instance's keys), returns None (<ok/>) or the output's
        elements, raises RpcError; it may be a coroutine function, as for `register_rpc`."""
        self.actions.register(path, handler)

    def publish(self, body: etree._Element | Callable[[], etree._Element]) -> None:
        """For the daemon: publish a YANG notification (e.g. mipha binding-created) on stream NETCONF.
        `body` may be a function building the element: it runs only when a subscriber or a replay
        needs the notification (the time is the time of this call either way)."""
        self.events.publish(body)

    def publish_config_change(
        self, sess: NetconfSession, datastore: str, tags: list[tuple[str, str]]
    ) -> None:
        edits, nsmap = [], {}
        for tag, op in tags:
            ns, _, name = tag[1:].partition("}")
            mod = self.schema.ns_to_module.get(ns)
            if mod is None:
                continue
            pfx = self.schema.module_prefix[mod]
            nsmap[pfx] = ns
            edits.append((f"/{pfx}:{name}", op))
        self.events.publish(
            ev.config_change(datastore, sess.principal.user, sess.id, sess.source_host, edits, nsmap)
        )

    # -- operational state ---------------------------------------------------------------------------
    def state_roots(self, sess: NetconfSession, request: StateRequest) -> list[etree._Element]:
        wanted = filter_roots(request)
        roots: list[etree._Element] = []
        if wanted is None or (MON_NS, "netconf-state") in wanted:
            roots.append(
                netconf_state(
                    self.capabilities, self.lock_infos(), self.schema, self.session_infos(), self.stats
                )
            )
        if wanted is None or (NACM_NS, "nacm") in wanted:
            roots.append(self.nacm.state())
        if wanted is None or any(ns == YANGLIB_NS for ns, _ in wanted):
            roots.extend(yang_library(self.schema))
        if wanted is None or any(ns == SN_NS for ns, _ in wanted):
            roots.extend(self.subscriptions.state())
        for prov in self.providers:
            if wanted is not None and not (wanted & prov.roots):
                continue  # the filter cannot select anything this provider owns
            try:
                roots.extend(prov.get_state(request))
            except Exception:
                log.exception("operational provider %r failed", prov)
        return roots

    def merge_state(self, running: Forest, state: list[etree._Element]) -> tuple[Forest, bool]:
        """Config plus state roots (see server/statedata.py); True when the result is a private copy."""
        return merge_state(self.schema, running, state)

    def merge_into(self, data: Forest, state: list[etree._Element]) -> Forest:
        """Merge state into `data`, a private copy (e.g. running cut down by a filter), in place."""
        return merge_into(self.schema, data, state)

    def strip_config(self, data: Forest) -> Forest:
        return strip_config(self.schema, data)

    def close(self) -> None:
        """Cancel the confirm timer and end every session. A background rollback still running is
        left to finish (`await wait_idle()`); if the process stops first, rollback.xml reverts the
        unconfirmed commit at the next start."""
        self.confirmed.close()
        self.configured.close()
        self.ds.close()
        for s in list(self.sessions.values()):
            s.terminate("other")
