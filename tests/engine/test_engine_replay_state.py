"""Replay state tracking for hot standby: which nodes' replay state changed, read back, installed
in another engine (what a standby does at takeover), which then answers like the first one."""

from __future__ import annotations

from ipaddress import IPv4Address

from engine_helpers import HA, NONCE, build_request, harness, node, sa, vr_config

from ha.engine.home_agent import ReplayState
from ha.protocol import pull_registration_reply

HOME, COA = "10.1.0.1", "198.51.100.7"


def nonce_config():
    return vr_config([node("mn1", HOME, security_associations=[sa(replay_protection=NONCE)])], address=HA)


def test_changes_are_tracked_per_node_and_restored_into_another_engine():
    active, standby = harness(nonce_config()), harness(nonce_config())
    active.engine.track_replay()
    first = active.register(HOME, COA, identification=1)
    assert first.code == 133
    (change,) = active.engine.take_replay_changes()
    assert change == ("mn1", ReplayState(None, None, first.identification >> 32))  # a 133 offers a nonce
    data = build_request(home=HOME, coa=COA, identification=(first.identification >> 32 << 32) | 2)
    accepted = active.send(data, source=COA)
    reply = pull_registration_reply(accepted.data)
    assert reply.code == 0
    ((name, state),) = active.engine.take_replay_changes()
    assert state == ReplayState((first.identification >> 32 << 32) | 2, reply.identification >> 32, None)
    assert active.engine.take_replay_changes() == []  # taken
    raw = active.engine.raw_binding((int(IPv4Address(HOME)) << 32) | int(IPv4Address(COA)))
    assert active.engine.carried_nonce(raw) == reply.identification >> 32

    # Another engine answers the node's next request (echoing the nonce it holds) only with the state.
    nonce = reply.identification >> 32
    assert standby.register(HOME, COA, identification=(nonce << 32) | 3).code == 133
    standby.engine.reset_replay()
    assert standby.engine.restore_replay(name, state)
    assert not standby.engine.restore_replay("unknown", state)
    assert standby.register(HOME, COA, identification=(nonce << 32) | 4).code == 0
    standby.engine.reset_replay()
    assert standby.engine.replay_state("mn1") is None


def test_losing_the_binding_that_carried_the_state_is_a_change():
    h = harness(nonce_config())
    h.engine.track_replay()
    nonce = h.register(HOME, COA, identification=1).identification >> 32
    assert h.register(HOME, COA, identification=(nonce << 32) | 2, lifetime=5).code == 0
    h.engine.take_replay_changes()
    h.expire(6)
    ((name, state),) = h.engine.take_replay_changes()  # the expired binding carried it
    assert name == "mn1" and state is not None and state.identification == (nonce << 32) | 2
