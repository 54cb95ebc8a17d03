"""Replication transactions go straight to etcd's Raft leader.

A transaction sent to a follower is forwarded to the leader, and its answer waits until that
follower has learnt of the commit and applied the transaction itself: two more trips between
members and the follower's apply (stalled while its backend commits) on the path of every reply.
Sent to the leader, the answer waits for the leader's append, one follower's acknowledgement and
the leader's apply.  The durability is the same either way: etcd answers a write once it is
committed (in the logs of a majority), whichever member it reached.  (Same-run figures:
docs/performance.md §12.)

Which member leads is asked of the members themselves (``Status``: a member whose id is the leader
id it reports), on each configured endpoint; it is asked again when a transaction's answer carries
another Raft term than the last look (every election raises the term) or a transaction sent to the
leader failed.  Meanwhile, and whenever no member says it leads, transactions take the client's
ordinary channel (any member).

The same channels serve a standby's watch the other way round: through a member that *follows* a
leader (:meth:`LeaderRoute.follower`), since every member feeds its watchers in its apply, and the
leader's apply is on the way of every transaction's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import grpc
from aetcd import rpc

log = logging.getLogger(__name__)
#: at most one look for the leader per this many seconds (a term that keeps changing, e.g. during
#: an election, must not turn every answer into three Status calls)
LOOK_INTERVAL = 0.05


class LeaderRoute:
    """One channel per configured etcd member (opened on first use) and the KV stub of the leader's."""

    def __init__(
        self,
        endpoints: Iterable[tuple[str, int]],
        tls: tuple[grpc.ChannelCredentials, list[tuple[str, str]]] | None = None,
        timeout: float = 1.0,
    ) -> None:
        self.endpoints = tuple(endpoints)
        self.tls = tls  # (credentials, channel options: EtcdTls's); None: plain text
        self.timeout = timeout
        self.leader: tuple[str, int] | None = None  # the endpoint that said it leads at the last look
        self.term = 0  # Raft term at the last look (0: no leader found)
        self.looks = 0
        self._channels: dict[tuple[str, int], grpc.aio.Channel] = {}
        self._stub: rpc.KVStub | None = None
        self._look: asyncio.Task | None = None
        self._last_look = float("-inf")

    def stub(self) -> rpc.KVStub | None:
        """The leader's KV stub; None: none known (use any member)."""
        return self._stub

    def answered(self, term: int) -> None:
        """A transaction's answer carried Raft term ``term``: look again if the leader may have moved."""
        if term != self.term:
            self.look()

    def failed(self) -> None:
        """A transaction sent to the leader failed: send through any member until a look finds one."""
        self._stub = None
        self.leader = None
        self.term = 0
        self.look()

    def look(self) -> None:
        """Find the leader in the background (once at a time, at most every LOOK_INTERVAL)."""
        loop = asyncio.get_running_loop()
        if self._look is not None and not self._look.done():
            return
        delay = max(0.0, self._last_look + LOOK_INTERVAL - loop.time())
        self._look = loop.create_task(self._find(delay), name="redundancy-etcd-leader")

    async def _find(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        self._last_look = asyncio.get_running_loop().time()
        self.looks += 1
        answers = await asyncio.gather(*(self._status(ep) for ep in self.endpoints), return_exceptions=True)
        for endpoint, status in zip(self.endpoints, answers, strict=True):
            if isinstance(status, rpc.StatusResponse) and status.leader == status.header.member_id:
                if endpoint != self.leader:
                    log.info("redundancy: replication goes to etcd's Raft leader at %s:%d", *endpoint)
                self.leader, self.term = endpoint, status.header.raft_term
                self._stub = rpc.KVStub(self._channel(endpoint))
                return
        self.leader, self.term, self._stub = None, 0, None

    async def follower(self) -> tuple[tuple[str, int], grpc.aio.Channel] | None:
        """A member that follows a Raft leader, and its channel (the standby's watch goes there, so
        that the leader's apply does not also feed it); None: no member says it follows one."""
        answers = await asyncio.gather(*(self._status(ep) for ep in self.endpoints), return_exceptions=True)
        for endpoint, status in zip(self.endpoints, answers, strict=True):
            if isinstance(status, rpc.StatusResponse) and status.leader not in (0, status.header.member_id):
                return endpoint, self._channel(endpoint)
        return None

    async def leads(self, endpoint: tuple[str, int]) -> bool:
        """Whether the member at ``endpoint`` is the Raft leader now."""
        status = await self._status(endpoint)
        return status.leader == status.header.member_id

    async def _status(self, endpoint: tuple[str, int]) -> rpc.StatusResponse:
        stub = rpc.MaintenanceStub(self._channel(endpoint))
        return await stub.Status(rpc.StatusRequest(), timeout=self.timeout)

    def _channel(self, endpoint: tuple[str, int]) -> grpc.aio.Channel:
        channel = self._channels.get(endpoint)
        if channel is None:
            target = f"ipv4:{endpoint[0]}:{endpoint[1]}"
            if self.tls is None:
                channel = grpc.aio.insecure_channel(target)
            else:
                credentials, options = self.tls
                channel = grpc.aio.secure_channel(target, credentials, options=options)
            self._channels[endpoint] = channel
        return channel

    async def close(self) -> None:
        if self._look is not None:
            self._look.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._look
        channels, self._channels = list(self._channels.values()), {}
        self._stub, self.leader, self.term = None, None, 0
        for channel in channels:
            with contextlib.suppress(Exception):
                await channel.close()
