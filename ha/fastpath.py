"""The renewal fast path: repeats of remembered renewals answered in C, datagrams read and written
in batches (``recvmmsg`` / ``sendmmsg``) — with the Python path as the fallback and the reference.

``ha/_fastpath.c`` is optional (built by ``pip install -e .`` when a compiler, the Python headers and
libssl-dev are there): without it, or with ``MIPHA_FASTPATH=0`` in the environment, every datagram
takes the Python path, as it always did.  :func:`status` says which path runs (the daemon logs it
when each virtual router starts).

What C does and does not decide (``ha/_fastpath.c``'s header): for each datagram in order, a hit is
a repeat of a renewal the engine's cache remembers (:mod:`ha.engine.renewals`) whose layout, peer,
authenticator and Identification check out exactly as ``HomeAgent._renew_cached`` checks them;
:meth:`HomeAgent.renew_batch` then checks the Python state the entry depends on (the same checks,
shared code: the node's Identification every time, the rest when the engine's generation moved since
the entry last held) and applies the renewal.  Anything else — another layout, a failed check, no entry, a
renewal Python no longer holds — goes to the Python path unchanged, in order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any, Protocol

from ha.protocol import AuthAlgorithm, SecurityAssociation

try:
    from ha import _fastpath  # type: ignore[attr-defined]
except ImportError as error:  # not built: no compiler, headers or libcrypto at install time
    _fastpath = None
    _WHY = f"Python path: the C extension is not built ({error})"
else:
    _WHY = "C path (ha._fastpath: recvmmsg/sendmmsg, renewals in place answered in C)"

#: Environment switch: ``MIPHA_FASTPATH=0`` forces the Python path (tests compare both).
ENV = "MIPHA_FASTPATH"


class _Engine(Protocol):  # ha.engine.home_agent.HomeAgent (which imports this module)
    def renew_batch(
        self, hits: list, *, now: float, wallclock: float, received_on: IPv4Address, port: int
    ) -> int: ...


def enabled() -> bool:
    """Whether the C path serves (built, and not switched off); read when an engine is made."""
    return _fastpath is not None and os.environ.get(ENV, "1") != "0"


def status() -> str:
    """Which receive path runs, and why (the start-up log line of each virtual router)."""
    if _fastpath is not None and not enabled():
        return f"Python path: {ENV}=0"
    return _WHY


def entry(
    sa: SecurityAssociation,
    *,
    tolerance: int,
    last: int,
    extension: bytes,
    reply_head: bytes,
    reply_extension: bytes,
    source: IPv4Address,
    port: int,
) -> Any:
    """The C copy of a remembered renewal (``Renewal.fast``); None when C cannot serve it."""
    if _fastpath is None or len(extension) > _fastpath.MAX_EXTENSION:
        return None
    if 20 + len(reply_extension) + 16 > _fastpath.MAX_REPLY:
        return None
    keyed = sa.algorithm is not AuthAlgorithm.HMAC_MD5
    return _fastpath.Entry(
        extension, keyed, sa.key, tolerance, last, reply_head, reply_extension, int(source), port
    )


def batch(fd: int, capacity: int) -> Any:
    """A receive/answer batch over socket ``fd`` (-1: none, slots filled with ``load``)."""
    assert _fastpath is not None
    return _fastpath.Batch(fd, capacity)


#: Datagrams per ``recvmmsg`` (the C module's slots).
SLOTS = _fastpath.SLOTS if _fastpath is not None else 32


def run(
    batch: Any,
    engine: _Engine,
    renewals: dict,
    *,
    now: float,
    wallclock: float,
    received_on: IPv4Address,
    port: int,
    slow: Callable[[bytes, tuple[str, int]], None],
) -> None:
    """Everything in ``batch``'s slots, in order: runs of C hits applied by the engine (their replies
    kept in the batch's outbox), every other datagram to ``slow`` (the Python path)."""
    count = batch.count
    start = 0
    process, commit, datagram = batch.process, batch.commit, batch.datagram
    while start < count:
        hits, stop = process(start, renewals, wallclock)
        if hits:
            applied = engine.renew_batch(
                hits, now=now, wallclock=wallclock, received_on=received_on, port=port
            )
            commit(applied)
            if applied < len(hits):
                for _index, renewal, _identification, _last in hits[applied:]:
                    renewal.fast.last = renewal.identification  # C ran ahead: back to what Python holds
                stop = hits[applied][0]
        if stop < count:
            slow(*datagram(stop))
            stop += 1
        start = stop
