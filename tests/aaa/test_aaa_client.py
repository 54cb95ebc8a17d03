"""The RADIUS client against servers that never answer: every look-up still gets its outcome, in
order of failover, and the backoff stays bounded however many requests time out."""

from __future__ import annotations

import asyncio
import socket
import time
from ipaddress import IPv4Address

from ha.aaa.config import AaaConfig, AaaServer
from ha.engine.config import AddressPool, HomeAgentConfig, VirtualRouterConfig
from ha.engine.home_agent import HomeAgent
from ha.mn.session import UNSPECIFIED, MobileNodeSession
from ha.protocol import SecurityAssociation, pull_registration_reply
from mipha.aaa import AaaClient, ServerState

HA = IPv4Address("127.0.0.1")


class Replies:
    def __init__(self) -> None:
        self.sent: list = []

    def send_replies(self, replies: list) -> None:
        self.sent.extend(replies)

    def poke(self) -> None:
        pass


def test_every_lookup_is_answered_130_after_1100_timeouts_across_two_silent_servers() -> None:
    silent = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for s in silent:
        s.bind(("127.0.0.1", 0))
    servers = tuple(AaaServer(HA, b"s", auth_port=s.getsockname()[1]) for s in silent)
    # two entries of the same address would be one server: the second listens on 127.0.0.2
    servers = (servers[0], AaaServer(IPv4Address("127.0.0.2"), b"s", auth_port=servers[1].auth_port))
    aaa = AaaConfig(servers=servers, lookup_password=b"x", timeout_ms=10, retries=0, disconnect_port=0)
    config = VirtualRouterConfig(
        "vr",
        home_agent=HomeAgentConfig(HA, authentication="aaa"),
        address_pools=[AddressPool("p", ((IPv4Address("10.0.0.1"), IPv4Address("10.0.255.254")),))],
        aaa=aaa,
    )
    engine = HomeAgent(config)
    out = Replies()
    count = 1100

    async def run() -> AaaClient:
        client = AaaClient(
            engine=lambda: engine, config=lambda: aaa, nas_address=HA, netns=None, flush=lambda: None,
            transport=lambda: out,
        )  # fmt: skip
        client.start()
        wall = time.time()
        sa = SecurityAssociation(256, b"k" * 16)
        for i in range(count):
            mn = MobileNodeSession(HA, UNSPECIFIED, IPv4Address("10.88.0.1"), sa, nai=f"n{i}@x")
            data = mn.build(mn.next_identification(wall))
            engine.handle_datagram(
                data,
                source=("10.88.0.1", 434),
                received_on=HA,
                now=asyncio.get_running_loop().time(),
                wallclock=wall,
            )
            client.submit(engine.drain_aaa_lookups())
        deadline = time.monotonic() + 30
        while len(out.sent) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        client.close()
        return client

    try:
        client = asyncio.run(run())
    finally:
        for s in silent:
            s.close()
    assert len(out.sent) == count
    assert {pull_registration_reply(o.data).code for o in out.sent} == {130}
    assert engine.aaa_pending == 0 and engine.aaa_counters.unavailable == count
    first, second = client.server_states()
    assert first.timeouts == count and second.timeouts == count  # each tried in order, then given up
    assert first.avoid_until - time.monotonic() <= 60


def test_backoff_doubles_from_one_second_to_sixty() -> None:
    state = ServerState(AaaServer(HA, b"s"))
    waits = []
    for _ in range(2000):
        state.failed(100.0)
        waits.append(state.avoid_until - 100.0)
    assert waits[:7] == [1, 2, 4, 8, 16, 32, 60] and max(waits) == 60
    state.answered(0.001)
    assert state.avoid_until == 0 and state.failures == 0
