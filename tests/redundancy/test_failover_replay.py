"""Replay state survives a failover: retransmissions and nonces, checked from the mobile node's side.

Two real `mipha run` daemons on one home link and a real 3-member etcd cluster.  Mobile nodes with
timestamp and nonce replay protection register, deregister and retransmit against the active daemon;
it is SIGKILLed; the very same request bytes are sent again and must get what the killed daemon
answered (a nonce retransmission: the same reply, byte for byte, authenticator included; a timestamp
repeat: 133, RFC 5944 §3.6.3/§5.7), and each node's next fresh request must be accepted, not 133.
"""

from __future__ import annotations

import os
import socket
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from etcd_cluster import EtcdCluster
from pair import COA, HA, HOME_START, PairDaemon, Topology
from test_failover_daemons import wait_redundancy

from ha.mn.session import MobileNodeSession, ReplyOutcome
from ha.netns import run_in_netns
from ha.protocol import SecurityAssociation
from ha.protocol.constants import AuthAlgorithm, ReplayProtection

pytestmark = [pytest.mark.netns, pytest.mark.slow]

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
TTL = 2
TIMESTAMP_NODES = (0, 4)
NONCE_NODES = (1, 2, 3)


class Node:
    """One mobile node over a UDP socket in the mobile node's namespace (blocking, with deadlines)."""

    def __init__(self, sock: socket.socket, index: int, nonce: bool) -> None:
        method = ReplayProtection.NONCE if nonce else ReplayProtection.TIMESTAMP
        self.sock = sock
        self.session = MobileNodeSession(
            home_agent=IPv4Address(HA),
            home_address=IPv4Address(HOME_START) + index,
            care_of_address=IPv4Address(COA),
            sa=SecurityAssociation(256, KEY, AuthAlgorithm.HMAC_MD5, method),
            lifetime=600,
        )

    def request(self, lifetime: int | None = None) -> tuple[int, bytes]:
        """A fresh request (Identification, bytes); lifetime 0 deregisters this care-of address."""
        identification = self.session.next_identification(time.time())
        return identification, self.session.build(identification, lifetime=lifetime)

    def send(self, identification: int, data: bytes, deadline: float = 10) -> tuple[ReplyOutcome, bytes]:
        """Send ``data`` (again every 0.3 s, unchanged) until its reply arrives; (outcome, raw reply)."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            self.sock.sendto(data, (HA, 434))
            resend = time.monotonic() + 0.3
            while time.monotonic() < min(resend, end):
                self.sock.settimeout(max(0.01, min(resend, end) - time.monotonic()))
                try:
                    reply = self.sock.recv(2048)
                except TimeoutError:
                    break
                outcome = self.session.check_reply(reply, identification, time.time())
                if outcome is not None:
                    assert outcome.authenticated, f"unauthenticated reply {outcome}"
                    return outcome, reply
        raise AssertionError(f"no reply to {identification:#018x} within {deadline} s")

    def register(self) -> tuple[int, bytes, bytes]:
        """Register (a nonce node's first request gets 133 with a nonce, then it retries); returns the
        accepted request's Identification, its bytes and the reply."""
        for _ in range(2):
            identification, data = self.request()
            outcome, reply = self.send(identification, data)
            if outcome.code == 0:
                return identification, data, reply
            assert outcome.code == 133, outcome
        raise AssertionError("not accepted after resynchronising")


def test_retransmissions_and_nonces_after_a_kill9(etcd: EtcdCluster, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (network namespaces)")
    topo = Topology()
    daemons: list[PairDaemon] = []
    sock = None
    try:
        topo.build()
        a = PairDaemon(tmp_path, "a", topo.a, etcd.endpoints, 5, TTL, nonce=NONCE_NODES)
        b = PairDaemon(tmp_path, "b", topo.b, etcd.endpoints, 5, TTL, nonce=NONCE_NODES)
        daemons += [a, b]
        a.start()
        a.wait_log("redundancy: active", 60)  # b is not running yet: a is the one to win
        b.start()
        b.wait_log("mipha running", 60)
        sock = run_in_netns(topo.mn, socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((COA, 0))
        nodes = {i: Node(sock, i, i in NONCE_NODES) for i in (*TIMESTAMP_NODES, *NONCE_NODES)}

        # Before the kill, against the active daemon: what it answers is what the new one must answer.
        ts_id, ts_req, _ = nodes[0].register()
        ts_repeat = nodes[0].send(ts_id, ts_req)[0]
        assert ts_repeat.code == 133, "a repeated timestamp Identification is a replay (§5.7)"
        nonce_id, nonce_req, nonce_reply = nodes[1].register()
        outcome, again = nodes[1].send(nonce_id, nonce_req)
        assert outcome.code == 0 and again == nonce_reply, "the active answers a nonce retransmission again"
        nodes[2].register()
        dereg_id, dereg_req = nodes[2].request(lifetime=0)
        outcome, dereg_reply = nodes[2].send(dereg_id, dereg_req)
        assert outcome.code == 0 and outcome.lifetime == 0
        offered = nodes[3].send(*nodes[3].request())[0]  # first contact: 133 with a nonce, nothing else
        assert offered.code == 133 and nodes[3].session.ha_nonce == offered.identification >> 32
        nodes[4].register()
        ts_dereg_id, ts_dereg_req = nodes[4].request(lifetime=0)
        assert nodes[4].send(ts_dereg_id, ts_dereg_req)[0].code == 0
        assert nodes[4].send(ts_dereg_id, ts_dereg_req)[0].code == 133

        a.kill9()
        # The nonce node's unanswered retransmission, resent unchanged until the new active answers.
        outcome, after = nodes[1].send(nonce_id, nonce_req, deadline=30)
        assert outcome.code == 0, f"nonce retransmission after the failover answered {outcome.code}"
        assert after == nonce_reply, "not the same reply (identification, nonce, authenticator)"
        state = wait_redundancy(b, lambda s: s.get("role") == ["active"])
        assert state["role"] == ["active"] and state["leader"] == ["b"], state
        outcome, after = nodes[2].send(dereg_id, dereg_req)
        assert outcome.code == 0 and after == dereg_reply, "a deregistration's retransmission"
        assert nodes[0].send(ts_id, ts_req)[0].code == 133, "a timestamp replay is still a replay"
        assert nodes[4].send(ts_dereg_id, ts_dereg_req)[0].code == 133, "a deregistration's too"
        # Fresh requests: the nonce each node holds is the one the new active expects.
        for i in (0, 1, 2, 3, 4):
            identification, data = nodes[i].request()
            outcome = nodes[i].send(identification, data)[0]
            assert outcome.code == 0, f"mn{i}: fresh request after the failover answered {outcome.code}"
    finally:
        if sock is not None:
            sock.close()
        for d in daemons:
            d.stop()
        topo.destroy()
