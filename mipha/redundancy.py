"""Hot standby on etcd: one active home agent per redundancy group, every acknowledged binding in Raft.

etcd (Raft) decides everything; mipha runs no election or replication protocol of its own:

- **Membership**: each daemon holds one etcd lease (``lease-ttl`` seconds, kept alive every sixth of
  it) and publishes ``<root>members/<node>`` under it.
- **Leadership**: ``<root>leader`` holds the active node's name under its lease, created only if
  absent (a transaction comparing the key's create revision with 0).  The key's create revision is the
  leader's **fencing token**.
- **Replication**: binding changes go to ``<root>bindings/<vr>/<home>/<care-of>`` in transactions that
  succeed only while ``<root>leader`` is still the key this leader created: a deposed leader cannot write,
  and since replies wait for the write (:meth:`Replicator.submit` returns the future the transport
  waits on), it cannot acknowledge anything either.  Changes of one burst (and of every burst that
  arrives while a transaction is in flight) go in one transaction, split at etcd's 128 operations,
  sent to etcd's Raft leader (:mod:`mipha.etcd_leader`); up to MAX_IN_FLIGHT batches at once, never
  two holding the same key.  What they compare is the leader key's *mod* revision (the *epoch*: the
  token until the leader moves it): a transaction whose outcome was unknown is sent again only after
  the leader put its own key once more, so that its first attempt, applied late, writes nothing.
- **Fencing by time**: a leader whose lease could not be refreshed stops answering at
  ``last refresh sent + lease-ttl - margin``, before etcd can expire the lease and elect the other.
- **Standby**: :class:`Mirror` loads the bindings and follows them with a watch, so taking over is
  installing what it already holds (plus one catch-up read: after the takeover no older leader can
  write, so that read is complete).

The daemon wiring lives in the daemon; this module knows etcd, not sockets or kernels.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aetcd
import aetcd.exceptions
import aetcd.watcher
import grpc
from aetcd import rpc
from aetcd.utils import prefix_range_end

from ha.engine.home_agent import ReplayState

from .etcd_leader import LeaderRoute
from .journal import BindingRecord
from .metrics import Latency

log = logging.getLogger(__name__)

#: etcd's default --max-txn-ops is 128; one slot is kept for nothing (compares do not count).
MAX_TXN_OPS = 128
RPC_TIMEOUT = 1.0
POLL_INTERVAL = 0.1
#: A standby checks this often that the member serving its watch still is no Raft leader.
WATCH_RECHECK = 1.0
#: Batches in flight at once (each of up to MAX_TXN_OPS-operation transactions): etcd commits
#: concurrent transactions together, so a burst does not wait for the previous one's round trip.
MAX_IN_FLIGHT = 4
#: One attempt of a replication transaction lasts at most this many times the recent transaction
#: latency (an average), within these bounds; then it is sent again (puts and deletes of the same
#: values are idempotent).  A request that reached a member whose Raft leader just died is forwarded
#: to the dead leader and never answered: this bounds how long a write waits behind such an attempt
#: once etcd has elected a new leader.
TXN_ATTEMPT_FACTOR = 8
TXN_ATTEMPT_BOUNDS = (0.1, 1.0)
TXN_RETRY_DELAY = 0.02
#: gRPC metadata asking etcd to refuse a request at once (Unavailable, "no leader") while the member
#: it reached knows it has no Raft leader, instead of queueing it until a timeout.
REQUIRE_LEADER = (("hasleader", "true"),)
#: Buckets of the replication stage histograms: a reply's budget is tens of milliseconds.
STAGE_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5,
                 1.0, 2.5)  # fmt: skip


class RedundancyError(ValueError):
    """The [redundancy] bootstrap section is wrong; the message says where."""


class Fenced(RuntimeError):
    """This node is no longer the leader (its fencing token no longer holds, or its lease ran out)."""


@dataclass(frozen=True)
class EtcdTls:
    """TLS towards etcd (``https://`` endpoints): the CA that signed the members' server certificates
    (None: the system's roots), this member's client certificate and key for etcd's
    ``--client-cert-auth`` (None: none sent), and the name every member's certificate must carry."""

    server_name: str
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return None if path is None else path.read_bytes()

        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))

    def channel_options(self) -> list[tuple[str, str]]:
        """gRPC options of a channel to any member: the one name checked in every certificate."""
        return [
            ("grpc.default_authority", self.server_name),
            ("grpc.ssl_target_name_override", self.server_name),
        ]


@dataclass(frozen=True)
class RedundancyConfig:
    """The ``[redundancy]`` bootstrap section (see docs/redundancy.md)."""

    etcd: tuple[tuple[str, int], ...]  # (IPv4 address, port) of every member
    group: str
    node: str
    lease_ttl: int = 2
    prefix: str = "/mipha"
    #: a standby programs its data plane (tunnels, routes in mipha's table) from the group's bindings
    warm_kernel: bool = True
    tls: EtcdTls | None = None  # None: plain text (http:// endpoints)
    #: replication transactions go to etcd's Raft leader (mipha.etcd_leader); False: to the member
    #: the client's channel picked (a follower forwards them)
    leader_route: bool = True

    @property
    def root(self) -> str:
        return f"{self.prefix}/{self.group}/"

    @property
    def margin(self) -> float:
        """How long before the lease could expire a leader that cannot reach etcd stops answering."""
        return min(0.5, self.lease_ttl / 4)


def parse_endpoint(url: str, where: str) -> tuple[str, int]:
    """``http[s]://HOST:PORT`` → (IPv4 address, port); names are resolved once, at start."""
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.port is None
        or parts.path not in ("", "/")
    ):
        raise RedundancyError(f"{where}: expected http://HOST:PORT or https://HOST:PORT, got {url!r}")
    try:
        address = socket.gethostbyname(parts.hostname)
    except OSError as exc:
        raise RedundancyError(f"{where}: cannot resolve {parts.hostname!r}: {exc}") from None
    return address, parts.port


#: [redundancy] keys of TLS towards etcd: key -> EtcdTls field (files; relative to the bootstrap file)
TLS_FILES = {"tls-ca": "ca", "tls-certificate": "cert", "tls-private-key": "key"}


def tls_from(section: dict, urls: list[str], where: str) -> EtcdTls | None:
    """``https://`` endpoints (all of them, or none) turn TLS on; the tls-* keys need them."""
    schemes = {urlsplit(u).scheme for u in urls}
    given = [k for k in (*TLS_FILES, "tls-server-name") if k in section]
    if schemes == {"http"}:
        if given:
            raise RedundancyError(f"{where}: {', '.join(given)} need https:// etcd endpoints")
        return None
    if len(schemes) > 1:
        raise RedundancyError(f"{where}: etcd endpoints must be all http:// or all https://")
    files: dict[str, Path | None] = {}
    for key, attr in TLS_FILES.items():
        value = section.get(key)
        if value is not None and (not isinstance(value, str | Path) or not Path(value).is_file()):
            raise RedundancyError(f"{where}: {key} must name a readable file, got {value!r}")
        files[attr] = None if value is None else Path(value)
    if (files["cert"] is None) != (files["key"] is None):
        raise RedundancyError(f"{where}: tls-certificate and tls-private-key go together")
    name = section.get("tls-server-name", urlsplit(urls[0]).hostname)
    if not isinstance(name, str) or not name or not name.isprintable():
        raise RedundancyError(f"{where}: tls-server-name must be a host name")
    return EtcdTls(name, **files)


def config_from(section: dict, where: str) -> RedundancyConfig:
    """Build the configuration from the parsed TOML table (keys checked by the bootstrap parser; the
    tls-* files already made absolute)."""
    etcd = section.get("etcd")
    if not isinstance(etcd, list) or not etcd or not all(isinstance(u, str) for u in etcd):
        raise RedundancyError(f"{where}: etcd must be a non-empty list of http[s]://HOST:PORT strings")
    endpoints = tuple(parse_endpoint(u, f"{where}: etcd") for u in etcd)
    tls = tls_from(section, etcd, where)
    names = {}
    for key in ("group", "node"):
        value = section.get(key)
        if not isinstance(value, str) or not value or "/" in value or not value.isprintable():
            raise RedundancyError(f"{where}: {key} must be a non-empty printable string without '/'")
        names[key] = value
    ttl = section.get("lease-ttl", 2)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= 60:
        raise RedundancyError(f"{where}: lease-ttl must be an integer number of seconds in 1..60")
    flags = {}
    for key in ("warm-kernel", "leader-route"):
        flags[key] = section.get(key, True)
        if not isinstance(flags[key], bool):
            raise RedundancyError(f"{where}: {key} must be true or false")
    return RedundancyConfig(
        endpoints, names["group"], names["node"], ttl, warm_kernel=flags["warm-kernel"], tls=tls,
        leader_route=flags["leader-route"],
    )  # fmt: skip


def etcd_client(
    endpoints: Iterable[tuple[str, int]], timeout: float = RPC_TIMEOUT, tls: EtcdTls | None = None
) -> aetcd.Client:
    """One gRPC channel over every member: target ``ipv4:a:p,b:q,...`` (gRPC's pick_first moves to the
    next member when the current one goes away).  aetcd formats the target as ``host:port``, so the
    list goes in ``host`` and the last port in ``port``."""
    targets = [f"{a}:{p}" for a, p in endpoints]
    head, _, port = targets[-1].rpartition(":")
    host = "ipv4:" + ",".join([*targets[:-1], head])
    if tls is None:
        return aetcd.Client(host=host, port=int(port), timeout=timeout)
    return TlsClient(tls, host=host, port=int(port), timeout=timeout)


class TlsClient(aetcd.Client):
    """aetcd's client on a TLS channel: aetcd 1.0 opens plain-text channels only, so this opens
    ``grpc.aio.secure_channel`` (the CA, the client certificate) and sets up the same stubs as
    :meth:`aetcd.Client.connect`.  The channel's one authority is the name checked in every member's
    certificate (one channel serves all members)."""

    _is_connecting: bool  # aetcd.Client's (untyped)

    def __init__(self, tls: EtcdTls, **kwargs) -> None:
        super().__init__(options=dict(tls.channel_options()), **kwargs)
        self.tls = tls

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        self._is_connecting = True
        try:
            target = f"{self._host}:{self._port}"
            self.channel = grpc.aio.secure_channel(
                target, self.tls.credentials(), options=list(self._options.items())
            )
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout)
            self._connected.set()
        finally:
            self._is_connecting = False


_TRANSIENT = (aetcd.exceptions.ClientError, asyncio.TimeoutError, ConnectionError)


@dataclass
class RoleChange:
    role: str  # "active" | "standby"
    leader: str | None
    at: float  # Unix time


@dataclass
class Status:
    """What op state ``redundancy`` shows."""

    role: str = "standby"
    leader: str | None = None
    peers: list[str] = field(default_factory=list)
    last_failover: float | None = None  # Unix time this node last became active
    replication_lag: int = 0  # etcd revisions the mirror is behind (standby) / changes queued (active)
    fencing_token: int = 0
    reason: str = ""
    config_agrees: bool | None = None  # None: nothing to compare with yet


class Member:
    """This daemon in its redundancy group: lease, election, fencing, replication.

    ``on_active(token)`` runs when this node won the election (the daemon installs the bindings and
    takes the address; it must return before replies are sent); ``on_standby(reason)`` when it lost
    or gave up the leadership (stop answering at once).  Both are awaited in order.
    """

    def __init__(
        self,
        config: RedundancyConfig,
        *,
        on_active: Callable[[int], Awaitable[None]],
        on_standby: Callable[[str], Awaitable[None]],
        describe: Callable[[], dict] = dict,
    ) -> None:
        self.config = config
        self.on_active = on_active
        self.on_standby = on_standby
        self.describe = describe  # extra fields published under members/<node> (config digest, ...)
        self.client = etcd_client(config.etcd, tls=config.tls)
        self.status = Status()
        self.lease_id: int | None = None
        self.fence_at = 0.0  # loop time after which this node must not answer as leader
        self.token = 0  # create revision of the leader key while active, else 0
        self.suspended = False  # leader that could not refresh its lease in time: not answering
        self.config_digest = ""  # of the configuration the group's members must share (set by the daemon)
        self._fence_timer: asyncio.TimerHandle | None = None
        self.replicator = Replicator(self)
        self._tasks: list[asyncio.Task] = []
        self._wake = asyncio.Event()
        self._closing = False

    @property
    def leader_key(self) -> bytes:
        return (self.config.root + "leader").encode()

    @property
    def active(self) -> bool:
        return self.token != 0 and not self.suspended and asyncio.get_running_loop().time() < self.fence_at

    async def start(self) -> None:
        await self.client.connect()
        self._tasks = [asyncio.create_task(self._campaign(), name="redundancy-campaign")]

    async def stop(self, *, resign: bool = True) -> None:
        """Stop campaigning; with ``resign`` give the leadership back at once (graceful stop)."""
        self._closing = True
        if self._fence_timer is not None:
            self._fence_timer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.replicator.stop()
        if resign and self.lease_id is not None:
            with contextlib.suppress(*_TRANSIENT):
                await asyncio.wait_for(self.client.revoke_lease(self.lease_id), RPC_TIMEOUT)
        self.token = 0
        with contextlib.suppress(Exception):
            await self.client.close()

    # -- lease ----------------------------------------------------------------------------------------

    async def _grant(self) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        lease = await self.client.lease(self.config.lease_ttl)
        self.lease_id = lease.id
        self.fence_at = sent + lease.ttl - self.config.margin
        info = {"node": self.config.node, **self.describe()}
        await self.client.put(self._member_key(self.config.node), json.dumps(info).encode(), lease=lease.id)

    def _member_key(self, node: str) -> bytes:
        return f"{self.config.root}members/{node}".encode()

    async def _refresh(self) -> bool:
        """One keepalive; False when the lease is gone (expired or revoked)."""
        assert self.lease_id is not None
        loop = asyncio.get_running_loop()
        sent = loop.time()
        timeout = min(RPC_TIMEOUT, self.keepalive)
        reply = await asyncio.wait_for(self.client.refresh_lease(self.lease_id), timeout)
        if reply is None or reply.TTL <= 0:
            return False
        self.fence_at = sent + reply.TTL - self.config.margin
        if self._fence_timer is not None:
            self._fence_timer.cancel()
        self._fence_timer = loop.call_at(self.fence_at, self._on_fence)
        return True

    def _on_fence(self) -> None:
        """The lease may run out soon and was not refreshed: suspend now, not at the next round."""
        self._fence_timer = None
        if self.token and not self.suspended and not self._closing:
            self._tasks.append(asyncio.get_running_loop().create_task(self._suspend("lease not refreshed")))

    # -- election -------------------------------------------------------------------------------------

    async def _campaign(self) -> None:
        """Hold a lease; try to become leader; while leader, keep the lease and check the key.

        A leader that cannot refresh its lease in time is *suspended* (stops answering, releases the
        address) but keeps its fencing token: when etcd answers again (an etcd leader election pauses
        every request for a second or two, and etcd extends leases across its own elections) and the
        leader key still has the token, it resumes without a failover.  It steps down only when the
        lease is gone or the key changed."""
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                if self.lease_id is None:
                    await self._grant()
                if not await self._refresh():
                    await self._step_down("lease expired")
                    self.lease_id = None
                    continue
                if self.token == 0:
                    if not await self._config_blocks():
                        await self._try_lead()
                else:
                    await self._check_lead()
                    if self.suspended:
                        await self._resume()
                await self._peers()
            except _TRANSIENT as exc:
                log.debug("redundancy: etcd request failed: %r", exc)
            except Fenced as exc:
                await self._step_down(str(exc))
                self.lease_id = None
            if self.token and not self.suspended and loop.time() >= self.fence_at:
                await self._suspend("the lease could not be refreshed in time")
            if self.suspended:  # try to resume soon after etcd answers again
                await asyncio.sleep(POLL_INTERVAL / 4)
            else:
                await asyncio.sleep(POLL_INTERVAL if self.token == 0 else self.keepalive)

    @property
    def keepalive(self) -> float:
        return self.config.lease_ttl / 6

    async def _suspend(self, reason: str) -> None:
        if self.suspended or not self.token:
            return
        log.warning("redundancy: %s suspended (stops answering): %s", self.config.node, reason)
        self.suspended = True
        self.status.role = "suspended"
        self.status.reason = reason
        await self.on_standby(f"suspended: {reason}")

    async def _resume(self) -> None:
        log.warning("redundancy: %s active again (lease and token held)", self.config.node)
        await self.on_active(self.token)
        self.suspended = False
        self.status.role = "active"
        self.status.reason = ""

    async def _try_lead(self) -> None:
        client = self.client
        key = self.leader_key
        ok, _ = await client.transaction(
            compare=[client.transactions.create(key) == 0],
            success=[client.transactions.put(key, self.config.node.encode(), lease=self.lease_id)],
            failure=[],
        )
        current = await client.get(key)
        if current is None:
            self.status.leader = None
            return
        self.status.leader = current.value.decode()
        if not ok and current.lease != self.lease_id:
            return
        if current.lease != self.lease_id:  # won, then lost before the read: the next round retries
            return
        token = current.create_revision
        log.info("redundancy: %s is the active home agent of group %s", self.config.node, self.config.group)
        try:
            self.token = token  # replication is fenced with it from now on
            await self.on_active(token)
        except Exception:
            log.exception("redundancy: taking over failed; giving the leadership back")
            await self._step_down("takeover failed")
            with contextlib.suppress(*_TRANSIENT):
                await client.revoke_lease(self.lease_id)
            self.lease_id = None
            return
        self.status.role = "active"
        self.status.fencing_token = token
        self.status.last_failover = time.time()
        self.status.reason = ""
        self.publish_config()  # not waited for: the campaign goes on while etcd is away

    async def _check_lead(self) -> None:
        current = await self.client.get(self.leader_key)
        if current is None or current.create_revision != self.token:
            raise Fenced("the leader key changed: another node is active")

    def fenced(self, exc: Fenced) -> None:
        """The replicator found the fencing token stale: step down now, not at the next round."""
        if self.token:
            asyncio.get_running_loop().create_task(self._step_down(str(exc)))
            self.token = 0

    async def _step_down(self, reason: str) -> None:
        self.token = 0
        self.suspended = False
        self.status.fencing_token = 0
        self.replicator.fail_pending(Fenced(reason))
        if self.status.role != "standby":
            log.warning("redundancy: %s stops being active: %s", self.config.node, reason)
            self.status.role = "standby"
            self.status.reason = reason
            await self.on_standby(reason)

    # -- configuration agreement ----------------------------------------------------------------------

    @property
    def config_key(self) -> bytes:
        return (self.config.root + "config").encode()

    def publish_config(self) -> asyncio.Future:
        """The active member writes its configuration digest as the group's, through the replicator:
        fenced, in order with the digests before it, and sent until etcd has it (or fenced).  The
        future completes once etcd has it."""
        if not self.config_digest:
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        future = self.replicator.submit(others=[(self.config_key, self.config_digest.encode())])
        future.add_done_callback(self._config_published)
        return future

    def _config_published(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is None:
            self.status.config_agrees = True

    async def _config_blocks(self) -> bool:
        """A standby whose configuration differs from the group's (the last active member's) must not
        take over: it would serve other nodes, keys or addresses than the bindings were made for."""
        group = await self.client.get(self.config_key)
        if group is None or not self.config_digest:
            self.status.config_agrees = None
            return False
        agrees = group.value.decode() == self.config_digest
        self.status.config_agrees = agrees
        if not agrees:
            reason = "configuration differs from the group's (the active member's): takeover blocked"
            if self.status.reason != reason:
                log.warning("redundancy: %s", reason)
            self.status.reason = reason
        elif self.status.reason.startswith("configuration differs"):
            self.status.reason = ""
        return not agrees

    async def _peers(self) -> None:
        prefix = f"{self.config.root}members/".encode()
        found = await self.client.get_prefix(prefix)
        self.status.peers = sorted(kv.key.decode()[len(prefix) :] for kv in found)


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def binding_key(root: str, vr: str, home: str, coa: str) -> bytes:
    return f"{root}bindings/{vr}/{home}/{coa}".encode()


def replay_key(root: str, vr: str, node: str) -> bytes:
    return f"{root}replay/{vr}/{node}".encode()


def replay_json(state: ReplayState) -> bytes:
    return json.dumps(dataclasses.asdict(state), separators=(",", ":")).encode()


def replay_of(value: bytes) -> ReplayState | None:
    try:
        entry = json.loads(value)
        return ReplayState(entry["identification"], entry["ha_nonce"], entry["offered_nonce"])
    except (ValueError, TypeError, KeyError):
        log.warning("redundancy: unreadable replay state in etcd skipped")
        return None


class Replicator:
    """Writes binding changes to etcd, fenced, batched, pipelined; callers wait on the returned future,
    which completes once its changes and every change submitted before them are in etcd."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self._pending: dict[bytes, bytes | None] = {}  # key -> value (None = delete); last one wins
        #: (future, loop time of its submit, binding changes it carries)
        self._waiters: list[tuple[asyncio.Future, float, int]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        #: replay/<vr>/<node> keys etcd holds (set at takeover from the mirror, kept up to date here)
        self.replay_keys: set[bytes] = set()
        self._flights: set[asyncio.Task] = set()  # batches in flight
        self._flying: dict[bytes, int] = {}  # keys in flight -> how many batches carry them
        self.transactions = 0
        self.operations = 0
        self.retries = 0  # attempts whose outcome was unknown
        self.bumps = 0  # epochs moved (after attempts whose outcome was unknown)
        self.resent = 0  # transactions refused because the epoch had moved, sent again
        #: (fencing token, epoch): the leader key's mod revision every replication transaction compares
        #: (see _write_chunk and _advance)
        self._epoch = (0, 0)
        self._bump_task: asyncio.Task | None = None
        self.peak_in_flight = 0  # most batches in flight at once so far
        self.unrouted = 0  # transaction attempts sent to any member (etcd's leader not known)
        self.latency = 0.02  # seconds, moving average of successful transactions
        #: where a reply's wait goes (exported as mipha_replication_seconds{stage}): ``queued`` from a
        #: burst's submit to its batch's start, ``etcd`` one transaction's successful round trip (as
        #: the client sees it), ``ordered`` from a batch's own write to its waiters' release (behind
        #: earlier batches), ``total`` from submit to release, once per binding change (what a
        #: registration's reply waits for)
        self.stages = {name: Latency(STAGE_BUCKETS) for name in ("queued", "etcd", "ordered", "total")}
        tls = member.config.tls
        #: transactions go to etcd's Raft leader (mipha.etcd_leader says why)
        self.route = LeaderRoute(
            member.config.etcd,
            None if tls is None else (tls.credentials(), tls.channel_options()),
            RPC_TIMEOUT,
        )

    @property
    def queued(self) -> int:
        return len(self._pending)

    def submit(
        self,
        added: Iterable[BindingRecord] = (),
        removed: Iterable[tuple[str, str, str]] = (),
        replay: Iterable[tuple[str, str, ReplayState | None]] = (),
        others: Iterable[tuple[bytes, bytes]] = (),
    ) -> asyncio.Future:
        """Queue changes; the future completes once etcd has them (or fails: do not acknowledge).

        ``replay`` is (vr, node, state): a node's replay state gets a key of its own, which goes
        (None) when a binding record carries the state.  ``others``: (key, value) of the group's
        other keys (the configuration digest), put in the same order."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        future.add_done_callback(_retrieved)  # expiries' deletions have no reply waiting on them
        if not self.member.token:
            future.set_exception(Fenced("not the active home agent"))
            return future
        pending = self._pending
        before = len(pending)
        root = self.member.config.root
        changes = 0
        for vr, home, coa in removed:
            pending[binding_key(root, vr, home, coa)] = None
            changes += 1
        for record in added:
            key = binding_key(root, record.vr, record.home_address, record.care_of_address)
            pending[key] = record.to_json().encode()
            changes += 1
        touched = False
        for vr, node, state in replay:
            key = replay_key(root, vr, node)
            if state is not None:
                pending[key] = replay_json(state)
                self.replay_keys.add(key)
                touched = True
            elif key in self.replay_keys:
                pending[key] = None
                self.replay_keys.discard(key)
                touched = True
        for key, value in others:
            pending[key] = value
            touched = True
        if len(pending) == before and not touched and not self._waiters and not self._flights:
            # Nothing to write and nothing earlier to wait behind.  (A reply with nothing to write,
            # e.g. to a retransmission, otherwise waits for every write submitted before it: it may
            # acknowledge one of them.)
            future.set_result(None)
            return future
        self._waiters.append((future, loop.time(), max(1, changes)))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="redundancy-replicator")
        self._wake.set()
        return future

    def fail_pending(self, exc: BaseException) -> None:
        self._pending.clear()
        waiters, self._waiters = self._waiters, []
        for future, _, _ in waiters:
            if not future.done():
                future.set_exception(exc)

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._flights, self._bump_task) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._flights.clear()
        self._flying.clear()
        self.fail_pending(Fenced("stopping"))
        await self.route.close()

    async def _run(self) -> None:
        """Start a batch whenever fewer than MAX_IN_FLIGHT are in flight (what piles up meanwhile
        goes into the next one); a batch with a key still in flight waits for the flights before it."""
        previous: asyncio.Task | None = None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while len(self._flights) >= MAX_IN_FLIGHT:
                await asyncio.wait(self._flights, return_when=asyncio.FIRST_COMPLETED)
            if not self._waiters:
                continue
            if self._flights and any(key in self._flying for key in self._pending):
                await asyncio.wait(self._flights)  # the same key twice in flight: order unknown
                if not self._waiters:  # failed meanwhile (fenced)
                    continue
            batch, self._pending = self._pending, {}
            waiters, self._waiters = self._waiters, []
            self.stages["queued"].observe(asyncio.get_running_loop().time() - waiters[0][1])
            for key in batch:
                self._flying[key] = self._flying.get(key, 0) + 1
            previous = asyncio.get_running_loop().create_task(self._flight(batch, waiters, previous))
            self._flights.add(previous)
            previous.add_done_callback(self._flights.discard)
            self.peak_in_flight = max(self.peak_in_flight, len(self._flights))

    async def _flight(
        self,
        batch: dict[bytes, bytes | None],
        waiters: list[tuple[asyncio.Future, float, int]],
        previous: asyncio.Task | None,
    ) -> BaseException | None:
        """Write one batch; its waiters complete once it and every batch before it are in etcd (a
        reply never overtakes a write submitted before it).  Returns the failure, if any."""
        error: BaseException | None = None
        try:
            await self._write(batch)
        except Exception as exc:
            error = exc
        finally:
            flying = self._flying
            for key in batch:
                count = flying.pop(key, 1) - 1
                if count:
                    flying[key] = count
        loop = asyncio.get_running_loop()
        written = loop.time()
        if previous is not None:
            before = await asyncio.shield(previous)
            if error is None:
                error = before
        now = loop.time()
        if error is None:
            self.stages["ordered"].observe(now - written)
        total = self.stages["total"]
        for future, submitted, changes in waiters:
            if not future.done():
                if error is None:
                    total.observe(now - submitted, changes)
                    future.set_result(None)
                else:
                    future.set_exception(error)
        if isinstance(error, Fenced):
            self.fail_pending(error)
            self.member.fenced(error)
        return error

    async def _write(self, batch: dict[bytes, bytes | None]) -> None:
        """Fenced transactions of at most MAX_TXN_OPS operations each, in flight together (a batch
        holds each key once, so their order does not matter; the next batch waits for all of them)."""
        items = list(batch.items())
        chunks = [items[i : i + MAX_TXN_OPS] for i in range(0, len(items), MAX_TXN_OPS)]
        await asyncio.gather(*(self._write_chunk(chunk) for chunk in chunks))

    async def _write_chunk(self, items: list[tuple[bytes, bytes | None]]) -> None:
        """One fenced transaction, sent again until etcd applied it (puts and deletes are idempotent).

        It compares the leader key's mod revision with the replicator's *epoch*: a deposed leader's
        transaction finds another key (fenced), and one whose outcome was unknown is sent again only
        after the epoch moved past it (:meth:`_advance`), so that a late first attempt writes nothing.
        The request is built once per epoch, as protobuf (see :meth:`_attempt`)."""
        ops = [
            rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k))
            if v is None
            else rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=v))
            for k, v in items
        ]
        request = None
        while True:
            token = self.member.token  # sent past the time fence too: a stale epoch cannot write
            if not token:
                raise Fenced("no longer the active home agent")
            epoch = self.epoch(token)
            if request is None or request.compare[0].mod_revision != epoch:
                request = self._fenced_txn(epoch, ops)
            response = await self._attempt(request)
            if response is None:  # outcome unknown: etcd may still apply it, later than what follows
                await self._advance(token, epoch)
                continue
            if not response.succeeded:
                self._refused(token, response)  # Fenced, or the epoch moved: send it again
                self.resent += 1
                if self.epoch(token) == epoch:  # (cannot be: the key's mod revision only grows)
                    await asyncio.sleep(TXN_RETRY_DELAY)
                continue
            self.transactions += 1
            self.operations += len(ops)
            return

    def epoch(self, token: int) -> int:
        """The leader key's mod revision every transaction of this leadership compares: its create
        revision (the fencing token) until this node moves it (:meth:`_bump`); 0 for a token that is
        not the current one (nothing left of that leadership may write)."""
        if token != self.member.token:
            return 0
        if self._epoch[0] != token:
            self._epoch = (token, token)
        return self._epoch[1]

    def _moved(self, token: int, revision: int) -> None:
        """etcd confirmed that the leader key (still ``token``'s) has mod revision ``revision``."""
        if self._epoch[0] == token and revision > self._epoch[1]:
            self._epoch = (token, revision)

    def _fenced_txn(self, epoch: int, success: list[rpc.RequestOp]) -> rpc.TxnRequest:
        """``success`` if the leader key's mod revision is ``epoch``; else read the key (which tells a
        key of another leadership, fenced, from an epoch that moved)."""
        key = self.member.leader_key
        compare = rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, key=key, mod_revision=epoch)
        read = rpc.RequestOp(request_range=rpc.RangeRequest(key=key))
        return rpc.TxnRequest(compare=[compare], success=success, failure=[read])

    def _refused(self, token: int, response: rpc.TxnResponse) -> None:
        """A fenced transaction's compare failed: raise Fenced if the leader key is gone or another
        leadership's; else note its mod revision (the epoch moved).  Nothing for a token that is no
        longer the current one (the caller finds out)."""
        if token != self.member.token:
            return
        kvs = response.responses[0].response_range.kvs if response.responses else ()
        if not kvs or kvs[0].create_revision != token:
            raise Fenced("the leader key changed: another node is active")
        self._moved(token, kvs[0].mod_revision)

    async def _advance(self, token: int, epoch: int) -> None:
        """An attempt compared ``epoch`` and its outcome is unknown: etcd may still apply it, after a
        later batch wrote one of its keys.  Once etcd confirmed the leader key has moved past
        ``epoch``, that attempt is settled for good (applied before, or never), and it may be sent
        again.  One bump at a time, shared by every chunk waiting.  (With another token, the leader
        key is another key, whose revisions are all newer than ``epoch``: settled as well.)"""
        while self.epoch(token) == epoch:
            task = self._bump_task
            if task is None or task.done():
                task = self._bump_task = asyncio.get_running_loop().create_task(
                    self._bump(token, epoch), name="redundancy-epoch"
                )
            await asyncio.shield(task)

    async def _bump(self, token: int, epoch: int) -> None:
        """Move the epoch: put the leader key again, value and lease unchanged, if its mod revision is
        still ``epoch``.  Sent again while its outcome is unknown: it compares the same epoch, so at
        most one attempt applies, and a refusal reads the key back (whoever moved it)."""
        put = rpc.PutRequest(key=self.member.leader_key, ignore_value=True, ignore_lease=True)
        request = self._fenced_txn(epoch, [rpc.RequestOp(request_put=put)])
        while self.epoch(token) == epoch:  # (0 once the token is not the current one)
            response = await self._attempt(request)
            if response is None:
                continue
            if response.succeeded:
                self.bumps += 1
                self._moved(token, response.header.revision)  # the put's revision
            else:
                self._refused(token, response)

    async def _attempt(self, request: rpc.TxnRequest) -> rpc.TxnResponse | None:
        """One attempt of a transaction, to etcd's Raft leader (mipha.etcd_leader; to any member while
        none is known), with a short deadline and etcd's require-leader metadata (see
        TXN_ATTEMPT_FACTOR and REQUIRE_LEADER).  None: its outcome is unknown."""
        client = self.member.client
        metadata = REQUIRE_LEADER + tuple(client.metadata or ())
        loop = asyncio.get_running_loop()
        low, high = TXN_ATTEMPT_BOUNDS
        timeout = min(high, max(low, TXN_ATTEMPT_FACTOR * self.latency))
        started = loop.time()
        leader_route = self.member.config.leader_route
        stub = self.route.stub() if leader_route else None
        if stub is None:
            self.unrouted += 1
        try:
            await client.connect()
            response = await (stub or client.kvstub).Txn(request, timeout=timeout, metadata=metadata)
        except (rpc.AioRpcError, *_TRANSIENT) as exc:
            if stub is not None:
                self.route.failed()
            self.retries += 1
            log.debug("redundancy: replication transaction failed (%s); retrying", exc)
            await asyncio.sleep(TXN_RETRY_DELAY)
            return None
        took = loop.time() - started
        self.latency += 0.1 * (took - self.latency)
        self.stages["etcd"].observe(took)
        if leader_route:
            self.route.answered(response.header.raft_term)
        return response


class Mirror:
    """The standby's copy of the group's bindings and replay state, kept current by an etcd watch
    (of the group's whole prefix: the leader, member and config keys are rare events, skipped)."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.records: dict[bytes, BindingRecord] = {}
        self.replay: dict[bytes, ReplayState] = {}  # replay/<vr>/<node>
        self.revision = 0  # etcd revision the copy reflects
        self.head = 0  # newest revision etcd told us about
        self._task: asyncio.Task | None = None
        #: bumped when the bindings change in a way the data plane sees (added, removed, moved),
        #: not on renewals: a standby programs its kernel when it moved (HotStandby)
        self.generation = 0

    @property
    def prefix(self) -> bytes:
        return (self.member.config.root + "bindings/").encode()

    @property
    def replay_prefix(self) -> bytes:
        return (self.member.config.root + "replay/").encode()

    def replay_of(self, vr: str) -> dict[str, ReplayState]:
        """Replicated replay state of ``vr``'s nodes, by node name."""
        head = self.replay_prefix + vr.encode() + b"/"
        return {k[len(head) :].decode(): v for k, v in self.replay.items() if k.startswith(head)}

    @property
    def lag(self) -> int:
        return max(0, self.head - self.revision)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._follow(), name="redundancy-mirror")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def load(self) -> None:
        """Read every binding (a linearizable read: complete once this node holds the leadership)."""
        found = await self.member.client.get_prefix(self.member.config.root.encode())
        records: dict[bytes, BindingRecord] = {}
        replay: dict[bytes, ReplayState] = {}
        for kv in found:
            if kv.key.startswith(self.prefix):
                record = _decode(kv.value)
                if record is not None:
                    records[kv.key] = record
            elif kv.key.startswith(self.replay_prefix):
                state = replay_of(kv.value)
                if state is not None:
                    replay[kv.key] = state
        self.records = records
        self.replay = replay
        self.generation += 1
        revision = found.header.revision if getattr(found, "header", None) else 0
        self.revision = self.head = max(self.revision, revision)

    async def _follow(self) -> None:
        while True:
            try:
                await self.load()
                while await self._watch():  # the member it watched leads now: watch another
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a member went away, the watch broke: reload and watch again
                log.debug("redundancy: mirror watch ended (%r); reloading", exc)
                await asyncio.sleep(POLL_INTERVAL)

    async def _watch(self) -> bool:
        """Follow the group's prefix from the next revision on one watch stream, served by a member
        that follows etcd's Raft leader (with ``leader-route``; else, or when none does, by the
        client's channel's member).  Every member applies every write and feeds its watchers in that
        apply; on the leader that apply is on the way of every replication transaction's answer.
        True: the watched member became the leader (checked every WATCH_RECHECK s), watch another.

        Not aetcd's watcher: it wraps every event in objects of its own and hands them over one by
        one through a queue (3 to 4 % of a core more at 5,000 changes/s, performance.md §12), and a
        watch nobody reads any more stays fed until it is cancelled.  Here each response's events
        are applied in one loop, and cancelling the call (stop, error) ends the watch in etcd.  With
        the require-leader metadata etcd ends the stream when the member it reached loses its Raft
        leader: the mirror then reloads through a member that has one, instead of waiting on one
        that hears nothing."""
        client = self.member.client
        await client.connect()
        route = self.member.replicator.route
        follower = await route.follower() if self.member.config.leader_route else None
        root = self.member.config.root.encode()
        create = rpc.WatchCreateRequest(
            key=root, range_end=prefix_range_end(root), start_revision=self.revision + 1
        )

        async def requests():
            yield rpc.WatchRequest(create_request=create)
            await asyncio.get_running_loop().create_future()  # the request side stays open

        channel = client.channel if follower is None else follower[1]
        metadata = REQUIRE_LEADER + tuple(client.metadata or ())
        call = rpc.WatchStub(channel).Watch(requests(), metadata=metadata)
        loop = asyncio.get_running_loop()
        stream = loop.create_task(self._stream(call))
        tasks = {stream}
        if follower is not None:
            tasks.add(loop.create_task(self._until_leads(follower[0])))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if stream in done:
                stream.result()
                raise RuntimeError("watch ended")
            return True
        finally:
            call.cancel()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _stream(self, call) -> None:
        async for response in call:
            if response.compact_revision or response.canceled:
                raise RuntimeError(f"watch ended by etcd: {response.cancel_reason or 'compacted'}")
            for event in response.events:
                self._apply(event.type == rpc.Event.DELETE, event.kv)

    async def _until_leads(self, endpoint: tuple[str, int]) -> None:
        """Return once the watched member is etcd's Raft leader (or does not answer)."""
        route = self.member.replicator.route
        while True:
            await asyncio.sleep(WATCH_RECHECK)
            try:
                if await route.leads(endpoint):
                    return
            except (rpc.AioRpcError, *_TRANSIENT):
                return

    def _apply(self, deleted: bool, kv) -> None:
        self.head = max(self.head, kv.mod_revision)
        if kv.key.startswith(self.replay_prefix):
            state = None if deleted else replay_of(kv.value)
            if state is None:
                self.replay.pop(kv.key, None)
            else:
                self.replay[kv.key] = state
            self.revision = kv.mod_revision
            return
        if not kv.key.startswith(self.prefix):
            self.revision = kv.mod_revision
            return
        if deleted:
            if self.records.pop(kv.key, None) is not None:
                self.generation += 1
        else:
            record = _decode(kv.value)
            if record is None:
                return
            previous = self.records.get(kv.key)
            self.records[kv.key] = record
            if previous is None or _tunnel(previous) != _tunnel(record):
                self.generation += 1
        self.revision = kv.mod_revision


def _tunnel(record: BindingRecord) -> tuple:
    """What of a binding record the data plane depends on (a renewal from the same place changes none)."""
    return (record.flags, record.encapsulation, record.source_address, record.source_port)


def _decode(value: bytes) -> BindingRecord | None:
    try:
        entry = json.loads(value)
        entry.pop("op", None)
        return BindingRecord(**entry)
    except (ValueError, TypeError):
        log.warning("redundancy: unreadable binding record in etcd skipped")
        return None
