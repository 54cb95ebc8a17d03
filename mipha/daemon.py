"""``mipha run``: one asyncio process wiring the NETCONF server to the home-agent engines.

Start sequence: read the binding journal → start the NETCONF server with the glue subscriber and the
operational-state provider → on the first start only, seed running/startup from the ``startup``
document → replay running through the subscriber (virtual routers come up, journaled bindings are
restored with their remaining lifetimes and the kernel is reconciled to them) → serve.  SIGTERM or
SIGINT stops gracefully: NETCONF closes, every virtual router stops and removes its kernel objects
(the journal keeps the bindings for the next start).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections import defaultdict
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from lxml import etree

from ha.engine.bindings import make_key
from ha.engine.config import VirtualRouterConfig
from mipha.model import NAMESPACE as MIPHA_NAMESPACE
from server.app import ServerHandle, build_core
from server.config import ServerConfig
from server.errors import RpcError
from server.push import ChangeFeed
from server.session import listen, load_or_create_host_key

from . import onchange
from .bootstrap import Bootstrap
from .glue import HomeAgentSubscriber
from .heap import TRIM_EVERY, trim_heap
from .journal import BindingJournal, BindingRecord
from .metrics import Latency, TimedSubscriber
from .notify import Notifier
from .runtime import VirtualRouter
from .state import HomeAgentStateProvider
from .trace import RegistrationTrace

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("mipha")
_Q = f"{{{MIPHA_NAMESPACE}}}"


class Daemon:
    """The running daemon: NETCONF server, virtual routers, journal."""

    def __init__(self, boot: Bootstrap, *, journal_fsync_interval: float = 0.05) -> None:
        self.boot = boot
        self.routers: dict[str, VirtualRouter] = {}
        self.journal = BindingJournal(
            boot.state_dir / "bindings.journal", fsync_interval=journal_fsync_interval
        )
        self._restored: dict[str, list[BindingRecord]] = {}
        self.server: ServerHandle | None = None
        self.notifier: Notifier | None = None
        self.feed: ChangeFeed | None = None  # YANG-Push on-change (server/push.py)
        self.subscriber = HomeAgentSubscriber(
            self.routers,
            self.new_router,
            restored=self.take_restored,
            removed=self.journal.forget_vr,
        )
        self.journal_latency, self.commit_latency = Latency(), Latency()  # exported by mipha/metrics.py
        self.metrics_port: int | None = None
        self._metrics: web.AppRunner | None = None
        self.restconf = None  # server.restconf.app.RestconfHandle when [restconf] is configured
        self.state = HomeAgentStateProvider(lambda: list(self.routers.values()))
        self._sync_task: asyncio.Task | None = None
        self._compaction: asyncio.Task | None = None
        self._stopped = asyncio.Event()
        self._trimmer: asyncio.Task | None = None
        self.standby = None  # mipha.standby.HotStandby with [redundancy]
        if boot.redundancy is not None:
            from .standby import HotStandby

            self.standby = HotStandby(boot.redundancy, lambda: list(self.routers.values()))

    # -- virtual routers ------------------------------------------------------------------------------

    def new_router(self, config: VirtualRouterConfig, proxy_arp_mode: str = "entry") -> VirtualRouter:
        vr = VirtualRouter(
            config,
            backend=self.boot.dataplane,
            journal=self.journal if self.standby is None else None,  # with hot standby etcd has them
            on_events=self._on_events,
            proxy_arp_mode=proxy_arp_mode,
        )
        if self.standby is not None:
            self.standby.attach(vr)
        vr.on_changes = self._on_changes
        return vr

    def take_restored(self, name: str) -> list[BindingRecord]:
        """Journaled bindings of a virtual router, handed over once at its first start."""
        return self._restored.pop(name, [])

    def _on_events(self, vr: str, events: list) -> None:
        if self.notifier is not None:
            self.notifier.events(vr, events)

    def _on_changes(self, vr: VirtualRouter, changed: list[int], renewed: list, events: list) -> None:
        if self.feed is not None and self.feed.jobs:
            keys = changed + [make_key(b.home_address, b.care_of_address) for b in renewed]
            try:
                onchange.bindings_changed(self.feed, vr, keys, events)
            except Exception:
                log.exception("on-change updates of virtual router %s failed", vr.name)

    # -- life cycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        boot = self.boot
        boot.state_dir.mkdir(parents=True, exist_ok=True)
        if boot.dataplane == "none":
            log.warning("data plane backend 'none': control plane only, NOTHING IS FORWARDED")
        for user in boot.lab_credentials_in_use():
            log.warning("user %s has the well-known lab password: lab use only, change it", user)
        live = self.journal.load()
        by_vr: dict[str, list[BindingRecord]] = defaultdict(list)
        for record in live.values():
            by_vr[record.vr].append(record)
        # With hot standby etcd holds the bindings: a restarted member starts as a standby, and its
        # journal is emptied (not written while etcd holds them: a later single-box start restores none).
        self._restored = dict(by_vr) if self.standby is None else {}
        self.journal.open(None if self.standby is None else [])
        config = ServerConfig(
            state_dir=boot.state_dir,
            host=boot.listen_host,
            port=boot.listen_port,
            users=list(boot.users),
            host_key_path=boot.host_key,
            max_message_size=boot.max_message_size,
            superuser_group=boot.superuser_group,
        )
        if boot.restconf_listen is not None:
            from server.restconf.app import with_restconf

            with_restconf(config)
        # construct → RPCs and notifications wired → seed (first start) → subscribers up → listen:
        # no client can connect before the virtual routers reflect running.
        providers: list = [self.state]
        if self.standby is not None:
            from .standby import RedundancyStateProvider

            providers.append(RedundancyStateProvider(self.standby))
        core = build_core(config, None, [TimedSubscriber(self.subscriber, self.commit_latency)], providers)
        self.notifier = Notifier(core.publish)
        self.feed = core.feed
        onchange.declare(core.feed)
        core.register_rpc(MIPHA_NAMESPACE, "clear-bindings", self.rpc_clear_bindings)
        core.register_rpc(MIPHA_NAMESPACE, "clear-statistics", self.rpc_clear_statistics)
        core.register_rpc(MIPHA_NAMESPACE, "trace-registrations", self.rpc_trace_registrations)
        if boot.startup is not None and core.seed(boot.startup.read_bytes()):
            log.info("first start: configuration seeded from %s", boot.startup)
        await core.replay_running()
        if self.standby is not None:
            self.standby.running = lambda: (core.ds.running, core.ds.generation)
            await self.standby.start()  # campaigns: may take over at once
        gc.freeze()  # the configuration is long-lived: keep the collector from rescanning it
        trim_heap()
        # Bindings, journal records and their indexes are long-lived and hold no cycles, but each is a
        # tracked object: with the default thresholds (700, 10, 10) the collector spent 1.4 s of the
        # 7.6 s of CPU that 100k first registrations cost, mostly rescanning them in 12 full
        # collections. Young collections every 10k allocations instead of 700: 0.26 s, no full one.
        gc.set_threshold(10_000, 10, 10)
        if boot.metrics_listen is not None:  # up before NETCONF: a client that got in can scrape
            from .metrics import serve

            self._metrics = await serve(self, *boot.metrics_listen)
        acceptor = await listen(
            core,
            host=config.host,
            port=config.port,
            users=config.users,
            host_key=load_or_create_host_key(config.host_key),
            fail_delay=config.auth_fail_delay,
            login_timeout=config.login_timeout,
            max_sessions=config.max_sessions,
        )
        port = acceptor.sockets[0].getsockname()[1] if acceptor.sockets else config.port
        self.server = ServerHandle(acceptor, core, config.host, port)
        if boot.restconf_listen is not None:
            self.restconf = await self._start_restconf(core)
        self._restored.clear()  # bindings of virtual routers no longer configured are dropped
        self._sync_task = asyncio.get_running_loop().create_task(self._journal_sync())
        self._trimmer = asyncio.get_running_loop().create_task(self._trim_heap())
        log.info(
            "mipha running: NETCONF on %s:%d, %d virtual router(s), data plane %s",
            self.server.host,
            self.server.port,
            len(self.routers),
            boot.dataplane,
        )

    async def _start_restconf(self, core):
        """RESTCONF beside NETCONF on the same core (server/restconf/, docs/restconf.md)."""
        from server.restconf.app import RestconfConfig, start_restconf

        boot = self.boot
        assert boot.restconf_listen is not None
        host, port = boot.restconf_listen
        return await start_restconf(
            core,
            RestconfConfig(
                state_dir=boot.state_dir,
                host=host,
                port=port,
                users=list(boot.users),
                cert=boot.restconf_cert,
                key=boot.restconf_key,
                client_ca=boot.restconf_client_ca,
                max_body=boot.max_message_size,
            ),
        )

    async def _journal_sync(self) -> None:
        """fdatasync within the journal's interval of a write; compact in the background when due
        (its own task: the syncs go on while the snapshot is written)."""
        interval = max(self.journal.fsync_interval / 2, 0.005)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            if self.journal.sync_due():
                try:
                    started = time.perf_counter()
                    await loop.run_in_executor(None, self.journal.sync)
                    self.journal_latency.observe(time.perf_counter() - started)
                except Exception:
                    log.exception("binding journal sync failed")
            idle = self._compaction is None or self._compaction.done()
            if idle and self.journal.compaction_due(self.binding_count()):  # one at a time
                self._compaction = loop.create_task(self._journal_compact())

    @staticmethod
    async def _trim_heap() -> None:
        """Freed heap pages back to the kernel, every few seconds (see mipha/heap.py)."""
        while True:
            await asyncio.sleep(TRIM_EVERY)
            trim_heap()

    def binding_count(self) -> int:
        return sum(vr.engine.binding_count for vr in self.routers.values() if vr.engine is not None)

    async def _journal_compact(self) -> None:
        """Snapshot the engines' bindings (under the transaction lock: no commit is moving bindings
        from a stopped to a rebuilt virtual router meanwhile), page by page with registrations going
        on between pages; the journal keeps the lines written since it began, so the snapshot plus
        those lines replays to the live set. The snapshot is written in a worker thread."""
        journal = self.journal
        assert self.server is not None
        async with self.server.core.txn_lock:
            journal.begin_compaction()
            snapshot: list[BindingRecord] = []
            for vr in list(self.routers.values()):
                for page in vr.record_pages():
                    snapshot.extend(page)
                    await asyncio.sleep(0)
        try:
            fd = await asyncio.get_running_loop().run_in_executor(None, journal.write_compacted, snapshot)
        except Exception:
            log.exception("binding journal compaction failed; appending to the current file")
            journal.abort_compaction()
            return
        try:
            journal.finish_compaction(fd, len(snapshot))
        except Exception:
            log.exception("binding journal compaction failed; appending to the current file")
            journal.abort_compaction(fd)

    async def stop(self) -> None:
        if self.standby is not None:  # resign first: the other member takes over without waiting
            await self.standby.stop()
        if self._metrics is not None:
            await self._metrics.cleanup()
        if self.restconf is not None:
            await self.restconf.close()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
        for task in (self._sync_task, self._trimmer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._compaction is not None:  # the current file stays the journal; close() drops the rest
            self._compaction.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._compaction
        for vr in list(self.routers.values()):
            await vr.stop(flush=True, release=False)
        self.routers.clear()
        self.journal.close()
        self._stopped.set()
        log.info("mipha stopped")

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
            log.info("signal received, stopping")
        finally:
            await self.stop()

    # -- RPCs -------------------------------------------------------------------------------------------

    def _router(self, rpc: etree._Element, required: bool) -> VirtualRouter | None:
        name_el = rpc.find(_Q + "virtual-router")
        if name_el is None or not (name_el.text or "").strip():
            if required:
                raise RpcError(
                    "missing-element",
                    "virtual-router is mandatory",
                    type="protocol",
                    info=(("bad-element", "virtual-router"),),
                )
            return None
        name = name_el.text.strip()
        vr = self.routers.get(name)
        if vr is None:
            raise RpcError(
                "invalid-value",
                f"no virtual router {name!r} is configured",
                type="application",
                app_tag="instance-required",
                info=(("bad-element", "virtual-router"),),
            )
        return vr

    @staticmethod
    def _address(rpc: etree._Element, leaf: str) -> IPv4Address | None:
        el = rpc.find(_Q + leaf)
        if el is None:
            return None
        try:
            return IPv4Address((el.text or "").strip())
        except ValueError:
            raise RpcError(
                "invalid-value",
                f"{leaf} must be an IPv4 address",
                type="application",
                info=(("bad-element", leaf),),
            ) from None

    async def rpc_clear_bindings(self, sess, rpc: etree._Element) -> bytes:
        vr = self._router(rpc, required=True)
        assert vr is not None
        selectors = [
            leaf
            for leaf in ("home-address", "nai", "care-of-address", "binding")
            if rpc.find(_Q + leaf) is not None
        ]
        if len(selectors) > 1:
            raise RpcError(
                "bad-element",
                "give at most one of home-address, nai, care-of-address, binding",
                type="protocol",
                info=(("bad-element", selectors[1]),),
            )
        pair = rpc.find(_Q + "binding")  # one (home-address, care-of-address) binding
        where = pair if pair is not None else rpc
        if pair is not None:
            for leaf in ("home-address", "care-of-address"):
                if pair.find(_Q + leaf) is None:
                    raise RpcError(
                        "missing-element",
                        f"binding needs its {leaf}",
                        type="protocol",
                        info=(("bad-element", leaf),),
                    )
        cleared = 0
        if vr.engine is not None and selectors in ([], ["care-of-address"]):  # maybe the whole table
            assert self.server is not None
            care_of = self._address(rpc, "care-of-address")
            async with self.server.core.txn_lock:  # no commit rebuilds the router between its pages
                cleared = await vr.clear_all(care_of_address=care_of)
        elif vr.engine is not None:
            nai_el = rpc.find(_Q + "nai")
            cleared = vr.engine.clear_bindings(
                home_address=self._address(where, "home-address"),
                nai=(nai_el.text or "").strip() if nai_el is not None else None,
                care_of_address=self._address(where, "care-of-address"),
            )
            vr.flush()
            if vr.transport is not None:
                vr.transport.poke()
            await vr.settle()  # kernel state is gone when the reply says so
        log.info("clear-bindings on %s by session %s: %d cleared", vr.name, getattr(sess, "id", "?"), cleared)
        return f'<cleared xmlns="{MIPHA_NAMESPACE}">{cleared}</cleared>'.encode()

    def rpc_clear_statistics(self, sess, rpc: etree._Element) -> None:
        vr = self._router(rpc, required=False)
        for target in [vr] if vr is not None else list(self.routers.values()):
            target.clear_statistics()
        return None

    def rpc_trace_registrations(self, sess, rpc: etree._Element) -> None:
        """Per-node trace (mipha/trace.py): hooked into the virtual router's transport while active."""
        vr = self._router(rpc, required=True)
        assert vr is not None
        home = self._address(rpc, "home-address")
        nai_el = rpc.find(_Q + "nai")
        nai = (nai_el.text or "").strip() if nai_el is not None else None
        if (home is None) == (nai is None):
            raise RpcError(
                "invalid-value" if home is not None else "missing-element",
                "give one of home-address, nai",
                type="protocol",
                info=(("bad-element", "nai" if home is not None else "home-address"),),
            )
        text = (rpc.findtext(_Q + "duration") or "600").strip()
        if not text.isdigit() or int(text) > 86400:
            raise RpcError(
                "invalid-value",
                "duration: 0..86400 seconds",
                type="protocol",
                info=(("bad-element", "duration"),),
            )
        transport = vr.transport
        if transport is None:
            raise RpcError("operation-failed", f"virtual router {vr.name} has no home agent running")
        trace = transport.trace
        if not isinstance(trace, RegistrationTrace):

            def detach(t=transport) -> None:
                t.trace = None

            trace = RegistrationTrace(vr.name, detach)
        trace.add(home=home, nai=nai, duration=int(text))
        transport.trace = trace if trace.active else None
        log.info(
            "trace-registrations on %s by session %s: %s for %ss",
            vr.name,
            getattr(sess, "id", "?"),
            home or nai,
            text,
        )
        return None
