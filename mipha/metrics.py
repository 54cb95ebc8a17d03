"""The Prometheus / OpenMetrics endpoint (bootstrap ``[metrics] listen = "HOST:PORT"``, off by default).

A prometheus_client custom collector reads, at scrape time, the counters that already exist: the
engines' MIP-MIB statistics, binding counts, pool usage and violation ring, the runtimes' data-plane
error counts, the NETCONF server's session and NACM counters. Nothing is counted per registration
for the endpoint, so a registration costs the same with it on or off. The latency histograms are
observed where the work happens: once per journal sync, per configuration transaction, and with hot
standby per replication batch and burst (never per registration). Served by aiohttp on the daemon's
own event loop, so a scrape reads the engines between two registrations, never in the middle of one.
Metric reference: docs/metrics.md.
"""

from __future__ import annotations

import asyncio
import bisect
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

    from .daemon import Daemon

log = logging.getLogger("mipha.metrics")
_SECOND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Latency:
    """A histogram kept as plain counts (observed off the registration path, exported at scrape)."""

    def __init__(self, buckets: tuple[float, ...] = _SECOND_BUCKETS) -> None:
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def observe(self, seconds: float, count: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += count
        self.total += seconds * count

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at or below it), as Prometheus buckets go."""
        cumulative, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return cumulative

    def family(self, name: str, doc: str):
        from prometheus_client.core import HistogramMetricFamily

        return HistogramMetricFamily(name, doc, buckets=self.cumulative(), sum_value=self.total)


class TimedSubscriber:
    """Wraps the daemon's config subscriber: one observation per transaction, validate → apply/abort."""

    def __init__(self, inner, latency: Latency) -> None:
        self.inner, self.latency = inner, latency
        self._start: float | None = None

    def __repr__(self) -> str:
        return repr(self.inner)

    def validate(self, txn):
        self._start = time.perf_counter()
        return self.inner.validate(txn)

    def prepare(self, txn):
        return self.inner.prepare(txn)

    async def abort(self, txn) -> None:
        try:
            await _maybe(self.inner.abort(txn))
        finally:
            self._observe()

    async def apply(self, txn) -> None:
        try:
            await _maybe(self.inner.apply(txn))
        finally:
            self._observe()

    def _observe(self) -> None:
        if self._start is not None:
            self.latency.observe(time.perf_counter() - self._start)
            self._start = None


async def _maybe(result) -> None:
    if inspect.isawaitable(result):
        await result


class DaemonCollector:
    """Everything the endpoint exposes, read from the daemon when scraped (prometheus_client and
    aiohttp are imported only when the endpoint is on)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def describe(self) -> Iterable:
        return []  # families are built at scrape time (the set of virtual routers changes)

    def collect(self) -> Iterator:
        d = self.daemon
        yield from _home_agents(list(d.routers.values()))
        yield d.journal_latency.family("mipha_journal_sync_seconds", "fdatasync of the binding journal")
        yield d.commit_latency.family(
            "mipha_commit_apply_seconds", "configuration transaction through the engines (validate to apply)"
        )
        if d.standby is not None:
            yield from _replication(d.standby.member.replicator)
        core = d.server.core if d.server is not None else None
        if core is not None:
            yield from _netconf(core)


def _replication(replicator) -> Iterator:
    """Hot standby: where a reply's wait for etcd goes, one histogram per stage, and the replication
    transactions sent, retried (outcome unknown: timeout, member lost) and their operations."""
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    family = HistogramMetricFamily(
        "mipha_replication_seconds", "a reply's wait for etcd, by stage", labels=["stage"]
    )
    for name, latency in replicator.stages.items():
        family.add_metric([name], latency.cumulative(), latency.total)
    yield family
    for name, doc, value in (
        ("transactions", "replication transactions etcd committed", replicator.transactions),
        ("retries", "replication transactions sent again (outcome unknown)", replicator.retries),
        ("operations", "puts and deletes etcd committed", replicator.operations),
        ("epoch_moves", "leader key epochs moved (after an attempt of unknown outcome)", replicator.bumps),
        ("resent", "replication transactions refused by a moved epoch, sent again", replicator.resent),
    ):
        yield CounterMetricFamily(f"mipha_replication_{name}", doc, value=value)


def _home_agents(routers: list) -> Iterator:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    fams: dict = {}

    def fam(kind: Callable, name: str, doc: str, labels: list[str]):
        if name not in fams:
            fams[name] = kind(name, doc, labels=labels)
        return fams[name]

    vr_label = ["virtual_router"]
    for vr in routers:
        engine = vr.engine
        if engine is None:
            continue
        s = engine.statistics
        name = [vr.name]
        fam(
            CounterMetricFamily, "mipha_registration_requests", "registration requests received", vr_label
        ).add_metric(name, s.requests_received)
        fam(
            CounterMetricFamily, "mipha_deregistration_requests", "deregistrations received", vr_label
        ).add_metric(name, s.deregistrations_received)
        fam(CounterMetricFamily, "mipha_registrations_accepted", "requests accepted", vr_label).add_metric(
            name, s.accepted
        )
        fam(CounterMetricFamily, "mipha_registrations_denied", "requests denied", vr_label).add_metric(
            name, s.denied
        )
        denied = fam(
            CounterMetricFamily,
            "mipha_registrations_denied_by_code",
            "requests denied by reply code",
            ["virtual_router", "code"],
        )
        for code, count in sorted(s.denied_by_code.items()):
            denied.add_metric([vr.name, str(int(code))], count)
        auth = fam(
            CounterMetricFamily,
            "mipha_authentication_failures",
            "failed authentications",
            ["virtual_router", "peer"],
        )
        auth.add_metric([vr.name, "mobile-node"], s.mn_auth_failures)
        auth.add_metric([vr.name, "foreign-agent"], s.fa_auth_failures)
        fam(
            CounterMetricFamily, "mipha_identification_mismatches", "replay protection failures", vr_label
        ).add_metric(name, s.identification_mismatches)
        fam(
            CounterMetricFamily, "mipha_requests_discarded", "requests silently discarded", vr_label
        ).add_metric(name, s.discarded + s.poorly_formed)
        fam(CounterMetricFamily, "mipha_replies_sent", "registration replies sent", vr_label).add_metric(
            name, s.replies_sent
        )
        fam(
            CounterMetricFamily, "mipha_security_violations", "security violations recorded", vr_label
        ).add_metric(name, s.security_violations_total)
        fam(
            CounterMetricFamily, "mipha_internal_errors", "requests that met a bug (logged)", vr_label
        ).add_metric(name, s.internal_errors)
        fam(GaugeMetricFamily, "mipha_bindings", "mobility bindings", vr_label).add_metric(
            name, engine.binding_count
        )
        fam(GaugeMetricFamily, "mipha_tunnels", "tunnels (care-of addresses in use)", vr_label).add_metric(
            name, len(vr.tunnels())
        )
        fam(
            CounterMetricFamily, "mipha_dataplane_failures", "data plane operations that failed", vr_label
        ).add_metric(name, vr.plane_errors)
        pool_labels = ["virtual_router", "pool"]
        for pool in engine.config.address_pools:
            usage = engine.pool_usage(pool)
            if usage is None:
                continue
            fam(GaugeMetricFamily, "mipha_pool_size", "addresses in the pool", pool_labels).add_metric(
                [vr.name, pool], usage.size
            )
            fam(
                GaugeMetricFamily, "mipha_pool_in_use", "addresses of the pool assigned", pool_labels
            ).add_metric([vr.name, pool], usage.in_use)
    yield from fams.values()


def _netconf(core) -> Iterator:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    yield GaugeMetricFamily("mipha_netconf_sessions", "NETCONF sessions open", value=len(core.sessions))
    st = core.stats
    yield CounterMetricFamily(
        "mipha_netconf_sessions_started", "NETCONF sessions started", value=st.in_sessions
    )
    yield CounterMetricFamily(
        "mipha_netconf_sessions_dropped", "NETCONF sessions dropped", value=st.dropped_sessions
    )
    yield CounterMetricFamily("mipha_netconf_rpcs", "NETCONF rpcs received", value=st.totals.in_rpcs)
    yield CounterMetricFamily(
        "mipha_netconf_rpc_errors", "NETCONF rpc-error replies", value=st.totals.out_rpc_errors
    )
    c = core.nacm.counters
    nacm = CounterMetricFamily("mipha_nacm_denied", "NACM denials (RFC 8341 counters)", labels=["what"])
    nacm.add_metric(["operations"], c.denied_operations)
    nacm.add_metric(["data-writes"], c.denied_data_writes)
    nacm.add_metric(["notifications"], c.denied_notifications)
    yield nacm


async def serve(daemon: Daemon, host: str, port: int) -> web.AppRunner:
    """Start the endpoint (``/metrics``); the caller keeps the runner and cleans it up at stop."""
    from aiohttp import web
    from prometheus_client.aiohttp import make_aiohttp_handler
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon))
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp annotates it AbstractServer; TCPSite's is an asyncio.Server
    sockets = server.sockets if isinstance(server, asyncio.Server) else ()
    bound = sockets[0].getsockname() if sockets else (host, port)
    daemon.metrics_port = bound[1]
    log.info("metrics on http://%s:%d/metrics", host, bound[1])
    return runner
