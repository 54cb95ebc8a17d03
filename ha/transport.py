"""The asyncio UDP shell of one virtual router's home agent (aioquic's ``asyncio/protocol.py`` role).

It is the only place that reads the clock (``loop.time()`` — monotonic — and ``time.time()``) and the
only place with a socket.  Every datagram goes to :meth:`HomeAgent.handle_datagram`; a reply's source
address is the address the request was sent to (RFC 5944 §3.8.3.1), or the HA's unicast address when
the request was a broadcast (discovery).  Two sockets share the port: one bound to the HA's unicast
address takes the usual traffic (the kernel prefers the exact binding) with plain ``recvfrom`` /
``sendto``; one bound to 0.0.0.0 receives subnet-directed and limited broadcasts (and requests to any
other local address), with ``IP_PKTINFO`` telling each one's destination and setting each reply's
source.  Expiry is driven with ``loop.call_at(engine.get_timer())``.

Datagrams are handled in bursts (as the tun backend handles packets): each wake-up drains the socket
until it would block (at most ``_BURST``), reads the clocks once, runs ``on_output`` once (one journal
write for the burst), then sends the burst's replies.

Exceptions never reach the event loop: a datagram that makes the engine raise is dropped and counted
(``discarded`` and :attr:`HomeAgentTransport.errors`), a failed send is counted in ``send_errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import struct
import time
from collections.abc import Callable
from ipaddress import IPv4Address

from ha import fastpath
from ha.engine.home_agent import HomeAgent, Outgoing
from ha.netns import run_in_netns

log = logging.getLogger(__name__)

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_PKTINFO = struct.Struct("=I4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
#: Datagrams handled per wake-up before yielding to the loop (keeps timers and other tasks fair).
_BURST = 256
#: Receive size: a whole UDP datagram.  Registrations are small, but RFC 3519 tunnel data (type 4)
#: arrives on these sockets too and carries inner packets up to the tunnel MTU (or 64 KiB reassembled);
#: a smaller buffer would truncate them silently.
_DATAGRAM = 65535
#: Bindings expired per timer callback before yielding to the loop.
_EXPIRY_BATCH = 512
#: RFC 3519 tunnel data (message type 4) shares the registration port.
_TUNNEL_DATA = b"\x04"


def _make_socket(address: str, port: int, reuse_port: bool, pktinfo: bool = True) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if pktinfo:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.bind((address, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_udp_socket(
    address: IPv4Address | str,
    port: int,
    netns: str | None = None,
    *,
    reuse_port: bool = False,
    pktinfo: bool = True,
) -> socket.socket:
    """A non-blocking UDP socket bound to ``(address, port)`` (IP_PKTINFO on unless ``pktinfo`` is
    False), created in ``netns``.

    A socket stays in the namespace it was created in, so the namespace is entered on a short-lived
    thread (``setns`` changes only the calling thread) and the daemon's threads are never moved.
    ``address`` 0.0.0.0 also receives broadcast discovery requests.
    """
    if netns is None:
        return _make_socket(str(address), port, reuse_port, pktinfo)
    return run_in_netns(netns, _make_socket, str(address), port, reuse_port, pktinfo)


class HomeAgentTransport:
    """Feeds one :class:`HomeAgent` from its UDP sockets and sends its replies.

    ``sock`` is bound to 0.0.0.0 (or any address) with IP_PKTINFO on; ``unicast``, if given, is
    bound to the HA's unicast address on the same port (see the module docstring).
    ``on_output`` is called after each burst that may have queued intents or events (the daemon
    drains ``next_intent`` / ``next_event`` there) and *before* the burst's replies are sent: the
    daemon journals the accepted bindings in it, so no reply acknowledges a binding that a crash
    could lose.  Use :meth:`start` / :meth:`close`.
    """

    def __init__(
        self,
        engine: HomeAgent,
        sock: socket.socket,
        *,
        unicast: socket.socket | None = None,
        on_output: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.time,
        tunnel_data: Callable[[bytes, tuple[str, int]], None] | None = None,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        self.engine = engine
        #: False: this home agent must not answer now (a hot standby, or an active one past its etcd
        #: lease); a burst read meanwhile is dropped and counted in ``held``
        self.gate = gate
        self.held = 0
        #: Where RFC 3519 tunnel data (type 4) goes: the data plane's ``udp_input``; None drops it.
        self.tunnel_data = tunnel_data
        self.tunnel_data_received = 0
        self.sock = sock
        self.unicast = unicast
        self.on_output = on_output
        self._wallclock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._port = sock.getsockname()[1]
        self._unicast_address: IPv4Address | None = None
        if unicast is not None:
            address = IPv4Address(unicast.getsockname()[0])
            ha = engine.config.home_agent
            # the engine's own object when it is the same address: replies then match by identity
            self._unicast_address = ha.address if ha is not None and ha.address == address else address
        self.errors = 0
        self.send_errors = 0
        self.received = 0
        self.received_any = 0  # of which on the wildcard socket
        self.bursts = 0
        self._destinations: dict[bytes, IPv4Address] = {}
        self._pktinfo: dict[IPv4Address, bytes] = {}
        self._replies: list[Outgoing] = []
        #: per-node trace (mipha/trace.py), called with (request, source, reply) only while one is on
        self.trace: Callable[[bytes, tuple[str, int], bytes | None], None] | None = None
        #: the C path over the unicast socket (ha/fastpath.py), None: every datagram takes Python's
        self._fast = (
            fastpath.batch(unicast.fileno(), _BURST) if unicast is not None and engine.fast_renewals else None
        )

    @property
    def receive_path(self) -> str:
        """Which path reads the unicast socket now, and why (ha/fastpath.py): the start-up log line and
        the YANG ``home-agent/receive-path``."""
        if self._fast is None and fastpath.enabled():
            return "Python path: the renewal cache is off"
        if self._fast is not None and self.trace is not None:
            return "Python path: a per-node trace is on (the C path resumes when it ends)"
        return fastpath.status()

    @property
    def in_c(self) -> bool:
        """Whether the C path reads the unicast socket now (what :attr:`receive_path` says)."""
        return self._fast is not None and self.trace is None

    @property
    def fast_hits(self) -> int:
        """Renewals answered by the C path (0 without it)."""
        return self._fast.hits if self._fast is not None else 0

    def start(self) -> None:
        """Register with the running loop."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._burst, self._receive_any)
        if self.unicast is not None:
            self._loop.add_reader(self.unicast.fileno(), self._burst, self._receive_unicast)
        self._schedule()

    def close(self) -> None:
        """Stop reading, cancel the timer and close the sockets."""
        sockets = [self.sock] if self.unicast is None else [self.sock, self.unicast]
        if self._loop is not None:
            for sock in sockets:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(sock.fileno())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for sock in sockets:
            sock.close()

    @property
    def local_address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    # --- receiving -------------------------------------------------------------------------------

    def _burst(self, receive: Callable[[float, float], int]) -> None:
        """One wake-up: drain a socket, then one ``on_output`` and the burst's replies."""
        loop = self._loop
        assert loop is not None
        if self.gate is not None and not self.gate():
            self._drop_burst()
            return
        handled = 0
        try:
            handled = receive(loop.time(), self._wallclock())
        finally:
            ok: bool | asyncio.Future = True
            if handled:
                self.received += handled
                self.bursts += 1
                self._schedule()
                ok = self._notify()
            replies, self._replies = self._replies, []
            replies.extend(self.engine.drain_datagrams())
            fast = self._fast
            if fast is not None and fast.pending:  # the C path's replies: sendmmsg, unless they wait
                if ok is True:
                    self.send_errors += fast.send()
                else:
                    source, port = self._unicast_address, self._port
                    assert source is not None  # the C path reads the unicast socket
                    replies.extend(Outgoing(data, to, source, port) for data, to in fast.take())
            if isinstance(ok, asyncio.Future):  # replication: the replies leave once it is done
                self.send_after(ok, replies)
                replies = []
            elif not ok:  # e.g. the journal could not record the bindings: the nodes will retransmit
                self.send_errors += len(replies)
                replies = []
            if replies:
                self._send_all(replies)

    def _receive_unicast(self, now: float, wallclock: float) -> int:
        """Datagrams sent to the HA's unicast address: their destination is known, no ancillary data."""
        if self._fast is not None and self.trace is None:
            return self._receive_fast(now, wallclock)
        recvfrom = self.unicast.recvfrom  # type: ignore[union-attr]  # set with _unicast_address
        handle = self._handle_unicast
        count = 0
        for _ in range(_BURST):
            try:
                data, source = recvfrom(_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:  # e.g. ICMP errors reported on the socket
                log.debug("recvfrom: %s", error)
                continue
            count += handle(data, source, now, wallclock)
        return count

    def _receive_fast(self, now: float, wallclock: float) -> int:
        """The unicast socket by the C path: recvmmsg, renewals in place answered in C and applied
        by the engine, every other datagram to :meth:`_handle_unicast`, in order (ha/fastpath.py)."""
        fast, engine = self._fast, self.engine
        assert fast is not None and self._unicast_address is not None
        renewals = engine.renewal_cache
        received_on, port = self._unicast_address, self._port
        tunnel_data = self.tunnel_data_received
        count = 0
        handle = self._handle_unicast

        def slow(data: bytes, source: tuple[str, int]) -> None:
            handle(data, source, now, wallclock)

        for _ in range(_BURST // fastpath.SLOTS):
            try:
                received = fast.receive()
            except OSError as error:  # e.g. ICMP errors reported on the socket
                log.debug("recvmmsg: %s", error)
                continue
            if not received:
                break
            count += received
            try:
                fastpath.run(
                    fast, engine, renewals, now=now, wallclock=wallclock, received_on=received_on,
                    port=port, slow=slow,
                )  # fmt: skip
            except Exception:  # a bug: the rest of this batch is dropped (the nodes retransmit), the
                # loop goes on; an entry C ran ahead of no longer matches Python's last Identification,
                # so its next repeat takes the Python path, which answers and realigns it
                self.errors += 1
                self.engine.statistics.discarded += 1
                log.exception("C path batch dropped: the engine raised")
                fast.commit(0)
            if received < fastpath.SLOTS:
                break
        return count - (self.tunnel_data_received - tunnel_data)

    def _handle_unicast(self, data: bytes, source: tuple[str, int], now: float, wallclock: float) -> int:
        """One datagram from the unicast socket by the Python path: 1 if it was a registration message."""
        if data[:1] == _TUNNEL_DATA:
            self._tunnel(data, source)
            return 0
        try:
            outgoing = self.engine.handle_datagram(
                data,
                source=source,
                received_on=self._unicast_address,  # type: ignore[arg-type]  # set with the socket
                now=now,
                wallclock=wallclock,
                destination_port=self._port,
            )
        except Exception:  # never let one datagram take the loop down
            self._engine_failed(source)
            return 1
        if outgoing is not None:
            self._replies.append(outgoing)
        if self.trace is not None:
            self.trace(data, source, outgoing.data if outgoing is not None else None)
        return 1

    def _receive_any(self, now: float, wallclock: float) -> int:
        """Datagrams to any local address (broadcasts): IP_PKTINFO says which one."""
        recvmsg = self.sock.recvmsg
        handle = self.engine.handle_datagram
        local = IPv4Address(self.sock.getsockname()[0])
        destinations, port, replies = self._destinations, self._port, self._replies
        count = 0
        for _ in range(_BURST):
            try:
                data, ancillary, _flags, source = recvmsg(_DATAGRAM, 64)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                log.debug("recvmsg: %s", error)
                continue
            if data[:1] == _TUNNEL_DATA:
                self._tunnel(data, source)
                continue
            count += 1
            received_on = local
            for level, kind, payload in ancillary:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= _PKTINFO.size:
                    raw = payload[8:12]  # ipi_addr: the header destination address
                    received_on = destinations.get(raw) or self._destination(raw)
            try:
                outgoing = handle(
                    data,
                    source=source,
                    received_on=received_on,
                    now=now,
                    wallclock=wallclock,
                    destination_port=port,
                )
            except Exception:
                self._engine_failed(source)
                continue
            if outgoing is not None:
                replies.append(outgoing)
            if self.trace is not None:
                self.trace(data, source, outgoing.data if outgoing is not None else None)
        self.received_any += count
        return count

    def _engine_failed(self, source: tuple[str, int]) -> None:
        self.errors += 1
        self.engine.statistics.discarded += 1
        log.exception("request from %s dropped: the engine raised", source)

    def _drop_burst(self) -> None:
        for sock in (self.sock, self.unicast):
            if sock is None:
                continue
            for _ in range(_BURST):
                try:
                    sock.recv(_DATAGRAM)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue
                self.held += 1

    def send_after(self, done: asyncio.Future, replies: list[Outgoing]) -> None:
        """Send ``replies`` once ``done`` (the replication of what they acknowledge) succeeded; if it
        failed nothing is acknowledged and the nodes retransmit."""
        if replies:
            done.add_done_callback(functools.partial(self._send_replicated, replies))

    def _send_replicated(self, replies: list[Outgoing], done: asyncio.Future) -> None:
        if done.cancelled() or done.exception() is not None:
            self.send_errors += len(replies)
            return
        self._schedule()
        self._send_all(replies)

    def _tunnel(self, data: bytes, source: tuple[str, int]) -> None:
        """RFC 3519 tunnel data (type 4) to the data plane; dropped when it takes none."""
        self.tunnel_data_received += 1
        if self.tunnel_data is None:
            return
        try:
            self.tunnel_data(data, source)
        except Exception:  # the data path must not take the registration loop down
            self.errors += 1
            log.exception("tunnel data from %s dropped: the data plane raised", source)

    def _destination(self, raw: bytes) -> IPv4Address:
        """Parse (and remember) a destination address; a socket sees very few distinct ones."""
        if len(self._destinations) > 64:
            self._destinations.clear()
        address = self._destinations[raw] = IPv4Address(raw)
        return address

    # --- sending ---------------------------------------------------------------------------------

    def _send_all(self, replies: list[Outgoing]) -> None:
        """A reply from the unicast address leaves by the unicast socket (``sendto``: the kernel
        picks that source); any other source is set with IP_PKTINFO on the wildcard socket."""
        address = self._unicast_address
        sendto = self.unicast.sendto if self.unicast is not None else None
        for outgoing in replies:
            if sendto is not None and (outgoing.source is address or outgoing.source == address):
                try:
                    sendto(outgoing.data, outgoing.destination)
                except OSError as error:
                    self.send_errors += 1
                    log.debug("reply to %s not sent: %s", outgoing.destination, error)
                except Exception:
                    self.send_errors += 1
                    log.exception("reply to %s not sent", outgoing.destination)
            else:
                self._send(outgoing)

    def _send(self, outgoing: Outgoing) -> None:
        pktinfo = self._pktinfo.get(outgoing.source)
        if pktinfo is None:
            if len(self._pktinfo) > 64:
                self._pktinfo.clear()
            pktinfo = self._pktinfo[outgoing.source] = _PKTINFO.pack(0, outgoing.source.packed, b"\0\0\0\0")
        try:
            self.sock.sendmsg(
                [outgoing.data], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)], 0, outgoing.destination
            )
        except OSError as error:
            self.send_errors += 1
            log.debug("reply to %s not sent: %s", outgoing.destination, error)
        except Exception:
            self.send_errors += 1
            log.exception("reply to %s not sent", outgoing.destination)

    # --- timers ----------------------------------------------------------------------------------

    def _schedule(self) -> None:
        loop = self._loop
        if loop is None:
            return
        when = self.engine.get_timer(settled=False)  # maybe early (then _on_timer settles), never late
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        assert self._loop is not None
        try:
            # A bounded batch: a mass expiry must not starve registrations; the rest runs next turn.
            self.engine.handle_timer(self._loop.time(), limit=_EXPIRY_BATCH)
        except Exception:
            self.errors += 1
            log.exception("expiry timer failed")
        self._schedule()
        if self._notify():
            self._send_own()

    def _send_own(self) -> None:
        """Send what the engine emits on its own (RFC 3543 revocations and their retransmissions)."""
        own = self.engine.drain_datagrams()
        if own:
            self._send_all(own)

    def _notify(self) -> bool | asyncio.Future:
        """Run ``on_output``; False when it failed (then the pending replies are not sent); the future
        it returned, if any (then the replies wait for it: :meth:`send_after`)."""
        if self.on_output is not None:
            try:
                result = self.on_output()
            except Exception:
                self.errors += 1
                log.exception("on_output callback failed")
                return False
            if isinstance(result, asyncio.Future):
                return result
        return True

    def send_replies(self, replies: list[Outgoing]) -> None:
        """Send replies decided outside a datagram burst (AAA answers), after the caller journaled them."""
        self._schedule()
        for outgoing in replies:
            self._send(outgoing)

    def poke(self) -> None:
        """Reschedule the timer after a direct engine call (config apply, clear-bindings)."""
        self._schedule()
        if self._notify():
            self._send_own()
