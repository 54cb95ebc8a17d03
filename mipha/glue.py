"""The one narrow glue: a running-datastore transaction becomes an engine + kernel transaction.

FRR northbound phases (``lib/northbound.h``), driven by the NETCONF server's subscriber interface:

* VALIDATE — turn the transaction's keyed diff into typed changes per virtual router
  (mipha/changes.py): only the entries the diff touches are converted (pure).
* PREPARE — everything that may fail, in order: per changed virtual router ``HomeAgent.prepare_change``
  (duplicates, pool shrinking below bound addresses, address clashes...), which checks a change of
  mobile nodes against the engine's indexes; for a new virtual router, or one whose namespace / home
  agent address / port / home interface changed, build its runtime for real (namespace, data plane
  backend, UDP socket), moving the live bindings over.  A refusal raises an ``RpcError`` naming the
  YANG node; the server then calls ABORT on us only if PREPARE had succeeded.
* ABORT — undo exactly what PREPARE built: stop the new runtimes, restart replaced ones.
* APPLY — cannot fail: swap engine configurations, stop removed virtual routers, publish the runtimes.

Virtual routers are handled in priority order (removals first, then changes, then additions), as FRR
orders destroys before creates.  The glue is one-way: the daemon hands it the table of running virtual
routers and a factory for new ones; it imports nothing of the daemon.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ha.engine.config import ConfigChange, VirtualRouterConfig
from ha.engine.errors import ConfigRefused
from ha.engine.transaction import Prepared
from mipha.model import NAMESPACE as MIPHA_NAMESPACE
from mipha.model import PREFIX as MIPHA_PREFIX
from server.errors import RpcError
from server.subscribers import Transaction
from server.validation import split_predicates, split_steps

from .changes import RouterChange, router_changes
from .heap import collector_paused
from .journal import BindingRecord
from .runtime import VirtualRouter, VirtualRouterError

log = logging.getLogger(__name__)
NSMAP = {MIPHA_PREFIX: MIPHA_NAMESPACE}


def prefixed(path: str) -> str:
    """Give every step and key of a ``/mipha:a/b[k='v']`` path the module prefix."""
    out = []
    for step in split_steps(path):
        name, preds = split_predicates(step)
        name = name if ":" in name else f"{MIPHA_PREFIX}:{name}"
        keys = "".join(f"[{MIPHA_PREFIX}:{k}={v}]" if k != "." else f"[.={v}]" for k, v in preds)
        out.append(name + keys)
    return "/" + "/".join(out)


def refusal(message: str, path: str, app_tag: str | None = None) -> RpcError:
    return RpcError(
        "operation-failed",
        message,
        type="application",
        app_tag=app_tag,
        path=prefixed(path),
        path_nsmap=NSMAP,
    )


#: Builds (does not start) the runtime of a virtual router: configuration, proxy-ARP mode.
RouterFactory = Callable[[VirtualRouterConfig, str], VirtualRouter]


#: What a change of these settings needs: a new runtime (socket, namespace, data plane).
def _structure(config: VirtualRouterConfig, proxy_arp_mode: str) -> tuple:
    ha = config.home_agent
    if ha is None:
        return (config.namespace, None)
    return (config.namespace, ha.address, ha.udp_port, ha.home_interface, proxy_arp_mode)


def _in_place(current: VirtualRouter, change: ConfigChange, mode: str) -> bool:
    """The router's own settings change (entries maybe too) and the engine takes them as they are:
    no pool changes, the home agent stays on, same socket, namespace and data plane (no walk of the
    configuration, no copy of its entry maps)."""
    settings = change.settings
    if settings is None or change.address_pools or settings.home_agent is None:
        return False
    ha = settings.home_agent
    config = current.config
    namespace = dataclasses.replace(config, netns=settings.netns).namespace  # entry maps shared
    after = (namespace, ha.address, ha.udp_port, ha.home_interface, mode)
    return config.home_agent is not None and _structure(config, current.proxy_arp_mode) == after


@dataclass
class Plan:
    """What one transaction does to the virtual routers, and what PREPARE built."""

    routers: dict[str, RouterChange]
    removed: list[str] = field(default_factory=list)
    changed: dict[str, Prepared] = field(default_factory=dict)
    rebuilt: dict[str, VirtualRouter] = field(default_factory=dict)  # name -> new runtime (old stopped)
    added: dict[str, VirtualRouter] = field(default_factory=dict)
    stopped_old: dict[str, tuple[VirtualRouterConfig, list[BindingRecord], str]] = field(default_factory=dict)


def _none(name: str) -> list[BindingRecord]:
    return []


def _nothing(name: str) -> None:
    return None


class HomeAgentSubscriber:
    """The config subscriber for the ``mipha-home-agent`` tree.

    ``routers`` is the daemon's table of running virtual routers (the glue adds, replaces and removes
    entries in APPLY); ``new_router`` builds a runtime; ``restored`` hands over a virtual router's
    journaled bindings at its first start; ``removed`` is told when a virtual router is gone."""

    def __init__(
        self,
        routers: dict[str, VirtualRouter],
        new_router: RouterFactory,
        *,
        restored: Callable[[str], list[BindingRecord]] = _none,
        removed: Callable[[str], None] = _nothing,
    ) -> None:
        self.routers = routers
        self.new_router = new_router
        self.restored = restored
        self.removed = removed

    def __repr__(self) -> str:
        return "HomeAgentSubscriber"

    # -- VALIDATE -------------------------------------------------------------------------------------

    def validate(self, txn: Transaction) -> None:
        try:
            with collector_paused():
                routers = router_changes(txn.diff, txn.new)
        except (ValueError, LookupError) as exc:
            raise RpcError("invalid-value", str(exc), type="application") from exc
        txn.resources[self] = Plan(routers)

    # -- PREPARE ----------------------------------------------------------------------------------------

    def _plan(self, txn: Transaction) -> Plan:
        """This subscriber's plan of `txn` (the server keeps it opaque, keyed by subscriber)."""
        plan = txn.resources[self]
        assert isinstance(plan, Plan)
        return plan

    async def prepare(self, txn: Transaction) -> None:
        plan = self._plan(txn)
        running = self.routers
        plan.removed = [name for name, rc in plan.routers.items() if rc.removed and name in running]
        try:
            for name, rc in plan.routers.items():
                current = running.get(name)
                if current is not None and not rc.removed:
                    await self._prepare_change(plan, current, rc)
            for name, rc in plan.routers.items():
                if name in running or rc.removed:
                    continue
                assert rc.whole is not None, f"a change of virtual router {name}, which does not run"
                vr = self.new_router(rc.whole, rc.mode or "entry")
                try:
                    await vr.start(self.restored(name))
                except VirtualRouterError as exc:
                    raise refusal(exc.message, exc.path, exc.app_tag) from exc
                plan.added[name] = vr
        except BaseException:
            await self._undo(plan)
            raise

    async def _prepare_change(self, plan: Plan, current: VirtualRouter, rc: RouterChange) -> None:
        """A running virtual router changes: entry by entry in its engine when only entries change,
        else as a whole new configuration (in its engine, or by a new runtime)."""
        mode = rc.mode or current.proxy_arp_mode
        change = rc.change
        if change is not None and current.engine is not None and change.entries_only:
            plan.changed[current.name] = self._engine_prepare(current, change)
            return
        if change is not None and current.engine is not None and _in_place(current, change, mode):
            settings = change.settings
            assert settings is not None and settings.home_agent is not None
            if settings.home_agent.home_prefix != current.home_prefix:  # what the engine needs beyond YANG
                home = dataclasses.replace(settings.home_agent, home_prefix=current.home_prefix)
                change = dataclasses.replace(change, settings=dataclasses.replace(settings, home_agent=home))
            plan.changed[current.name] = self._engine_prepare(current, change)
            return
        config = (
            rc.whole
            if rc.whole is not None
            else (change or ConfigChange(current.name)).applied_to(current.config)
        )
        if (
            _structure(current.config, current.proxy_arp_mode) != _structure(config, mode)
            or current.engine is None
        ):
            await self._rebuild(plan, current, config, mode)
        else:
            plan.changed[current.name] = self._engine_prepare(current, current.engine_config(config))

    @staticmethod
    def _engine_prepare(current: VirtualRouter, change: ConfigChange | VirtualRouterConfig) -> Prepared:
        assert current.engine is not None
        try:
            if isinstance(change, ConfigChange):
                return current.engine.prepare_change(change)
            return current.engine.prepare(change)
        except ConfigRefused as exc:
            raise refusal(exc.message, exc.path, exc.app_tag) from exc

    async def _rebuild(
        self, plan: Plan, current: VirtualRouter, config: VirtualRouterConfig, mode: str
    ) -> None:
        """Stop ``current`` and start a runtime for ``config`` with its bindings; undo on failure."""
        records = current.records()
        old_config = current.config
        await current.stop(flush=True, release=current.netns != config.namespace)
        plan.stopped_old[current.name] = (old_config, records, current.proxy_arp_mode)
        vr = self.new_router(config, mode)
        try:
            await vr.start(records)
        except VirtualRouterError as exc:
            raise refusal(exc.message, exc.path, exc.app_tag) from exc
        plan.rebuilt[current.name] = vr

    # -- ABORT ------------------------------------------------------------------------------------------

    async def abort(self, txn: Transaction) -> None:
        plan = txn.resources.get(self)
        if isinstance(plan, Plan):  # None when validate refused
            await self._undo(plan)

    async def _undo(self, plan: Plan) -> None:
        for name, prepared in plan.changed.items():
            vr = self.routers.get(name)
            if vr is not None and vr.engine is not None:
                vr.engine.abort(prepared)
        plan.changed.clear()
        for vr in plan.added.values():
            await vr.stop(flush=True, release=True)
        plan.added.clear()
        for vr in plan.rebuilt.values():
            await vr.stop(flush=True, release=False)
        plan.rebuilt.clear()
        for name, (old_config, records, mode) in plan.stopped_old.items():
            vr = self.new_router(old_config, mode)
            try:
                await vr.start(records)
            except Exception:
                log.exception("virtual router %s could not be restarted after an aborted change", name)
            self.routers[name] = vr
        plan.stopped_old.clear()

    # -- APPLY ------------------------------------------------------------------------------------------

    async def apply(self, txn: Transaction) -> None:
        plan = self._plan(txn)
        routers = self.routers
        for name in plan.removed:
            vr = routers.pop(name)
            await vr.stop(flush=True, release=True)
            self.removed(name)
            log.info("virtual router %s removed", name)
        for name, prepared in plan.changed.items():
            vr = routers[name]
            assert vr.engine is not None
            vr.engine.apply(prepared)
            # the engine's configuration: its mobile-node map is kept up to date in place, and a whole
            # configuration's map was copied into it (the glue's copy is not kept beside it)
            vr.config = vr.engine.config
            vr.flush()
            if vr.transport is not None:
                vr.transport.poke()
        for name, vr in {**plan.rebuilt, **plan.added}.items():
            routers[name] = vr
        txn.resources.pop(self, None)
        gc.freeze()  # new configuration objects are long-lived: out of the collector's scans
