"""The one narrow glue: a running-datastore transaction becomes an engine + kernel transaction.

FRR northbound phases (``lib/northbound.h``), driven by the NETCONF server's subscriber interface:

* VALIDATE — build the typed configuration of every virtual router from the new running tree (pure).
* PREPARE — everything that may fail, in order: per changed virtual router ``HomeAgent.prepare`` (pool
  shrinking below bound addresses, address clashes...); for a new virtual router, or one whose
  namespace / home agent address / port / home interface changed, build its runtime for real
  (namespace, data plane backend, UDP socket), moving the live bindings over.  A refusal raises an
  ``RpcError`` naming the YANG node; the server then calls ABORT on us only if PREPARE had succeeded.
* ABORT — undo exactly what PREPARE built: stop the new runtimes, restart replaced ones.
* APPLY — cannot fail: swap engine configurations, stop removed virtual routers, publish the runtimes.

Virtual routers are handled in priority order (removals first, then changes, then additions), as FRR
orders destroys before creates.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ha.engine.config import VirtualRouterConfig
from ha.engine.errors import ConfigRefused
from ha.engine.transaction import Prepared
from server.errors import RpcError
from server.subscribers import Transaction
from server.validation import split_predicates, split_steps
from server.yang import MIPHA_NAMESPACE, MIPHA_PREFIX

from .journal import BindingRecord
from .runtime import VirtualRouter, VirtualRouterError
from .yang_config import ConfigCache

if TYPE_CHECKING:
    from .daemon import Daemon

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


#: What a change of these settings needs: a new runtime (socket, namespace, data plane).
def _structure(config: VirtualRouterConfig, proxy_arp_mode: str) -> tuple:
    ha = config.home_agent
    if ha is None:
        return (config.namespace, None)
    return (config.namespace, ha.address, ha.udp_port, ha.home_interface, proxy_arp_mode)


@dataclass
class Plan:
    """What one transaction does to the virtual routers, and what PREPARE built."""

    configs: dict[str, VirtualRouterConfig]
    removed: list[str] = field(default_factory=list)
    changed: dict[str, Prepared] = field(default_factory=dict)
    rebuilt: dict[str, VirtualRouter] = field(default_factory=dict)  # name -> new runtime (old stopped)
    added: dict[str, VirtualRouter] = field(default_factory=dict)
    stopped_old: dict[str, tuple[VirtualRouterConfig, list[BindingRecord], str]] = field(default_factory=dict)


class HomeAgentSubscriber:
    """The daemon's config subscriber for the ``mipha-home-agent`` tree."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.cache = ConfigCache()

    def __repr__(self) -> str:
        return "HomeAgentSubscriber"

    def _mode(self, name: str) -> str:
        return self.cache.plane_options.get(name, {}).get("proxy_arp_mode", "entry")

    # -- VALIDATE -------------------------------------------------------------------------------------

    def validate(self, txn: Transaction) -> None:
        try:
            configs = self.cache.virtual_routers(txn.new)
        except ValueError as exc:
            raise RpcError("invalid-value", str(exc), type="application") from exc
        txn.resources[self] = Plan(configs)

    # -- PREPARE ----------------------------------------------------------------------------------------

    async def prepare(self, txn: Transaction) -> None:
        plan: Plan = txn.resources[self]
        running = self.daemon.routers
        plan.removed = [name for name in running if name not in plan.configs]
        try:
            for name, config in plan.configs.items():
                current = running.get(name)
                if current is None:
                    continue
                mode = self._mode(name)
                if current.config == config and current.proxy_arp_mode == mode:
                    continue
                if (
                    _structure(current.config, current.proxy_arp_mode) != _structure(config, mode)
                    or current.engine is None
                ):
                    await self._rebuild(plan, current, config)
                else:
                    try:
                        plan.changed[name] = current.engine.prepare(current.engine_config(config))
                    except ConfigRefused as exc:
                        raise refusal(exc.message, exc.path, exc.app_tag) from exc
            for name, config in plan.configs.items():
                if name in running:
                    continue
                vr = self.daemon.new_router(config, self._mode(name))
                try:
                    await vr.start(self.daemon.take_restored(name))
                except VirtualRouterError as exc:
                    raise refusal(exc.message, exc.path) from exc
                plan.added[name] = vr
        except BaseException:
            await self._undo(plan)
            raise

    async def _rebuild(self, plan: Plan, current: VirtualRouter, config: VirtualRouterConfig) -> None:
        """Stop ``current`` and start a runtime for ``config`` with its bindings; undo on failure."""
        records = current.records()
        old_config = current.config
        await current.stop(flush=True, release=current.netns != config.namespace)
        plan.stopped_old[current.name] = (old_config, records, current.proxy_arp_mode)
        vr = self.daemon.new_router(config, self._mode(config.name))
        try:
            await vr.start(records)
        except VirtualRouterError as exc:
            raise refusal(exc.message, exc.path) from exc
        plan.rebuilt[current.name] = vr

    # -- ABORT ------------------------------------------------------------------------------------------

    async def abort(self, txn: Transaction) -> None:
        plan: Plan | None = txn.resources.get(self)
        if plan is not None:
            await self._undo(plan)

    async def _undo(self, plan: Plan) -> None:
        for name, prepared in plan.changed.items():
            vr = self.daemon.routers.get(name)
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
            vr = self.daemon.new_router(old_config, mode)
            try:
                await vr.start(records)
            except Exception:
                log.exception("virtual router %s could not be restarted after an aborted change", name)
            self.daemon.routers[name] = vr
        plan.stopped_old.clear()

    # -- APPLY ------------------------------------------------------------------------------------------

    async def apply(self, txn: Transaction) -> None:
        plan: Plan = txn.resources[self]
        routers = self.daemon.routers
        for name in plan.removed:
            vr = routers.pop(name)
            await vr.stop(flush=True, release=True)
            if self.daemon.journal is not None:
                self.daemon.journal.forget_vr(name)
            log.info("virtual router %s removed", name)
        for name, prepared in plan.changed.items():
            vr = routers[name]
            assert vr.engine is not None
            vr.engine.apply(prepared)
            vr.config = plan.configs[name]
            vr.flush()
            if vr.transport is not None:
                vr.transport.poke()
        for name, vr in {**plan.rebuilt, **plan.added}.items():
            routers[name] = vr
        txn.resources.pop(self, None)
        gc.freeze()  # new configuration objects are long-lived: out of the collector's scans
