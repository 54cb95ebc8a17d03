"""The simulator must not take a forged, unauthenticated denial for the home agent's answer.

A stand-in home agent on loopback (a plain UDP socket) answers each request first with an
unauthenticated 131, as an on-path attacker racing the real home agent would, and only the second
copy of the request (the retransmission) with the real, signed acceptance.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from ipaddress import IPv4Address

from ha.mn.client import RegistrationClient
from ha.mn.session import MobileNodeSession
from ha.protocol import (
    ExtensionType,
    MobileHomeAuth,
    RegistrationReply,
    SecurityAssociation,
    pull_registration_request,
    push_registration_reply,
)

KEY = bytes(range(16))
SA = SecurityAssociation(300, KEY)
HOME = IPv4Address("10.1.0.1")
HA = IPv4Address("127.0.0.1")


def _stand_in(sock: socket.socket, stop: threading.Event, answers: list[int]) -> None:
    """Answer every request: an unsigned 131 at once, the signed 0 only to a retransmission."""
    seen = 0
    sock.settimeout(0.05)
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(2048)
        except TimeoutError:
            continue
        request = pull_registration_request(data)
        seen += 1
        forged = RegistrationReply(131, 0, request.home_address, HA, request.identification)
        sock.sendto(push_registration_reply(forged), peer)
        answers.append(131)
        if seen >= 2:
            real = RegistrationReply(
                0, 600, request.home_address, HA, request.identification, (MobileHomeAuth(SA.spi),)
            )
            sock.sendto(push_registration_reply(real, sign={ExtensionType.MN_HA_AUTH: SA}), peer)
            answers.append(0)


def _transact(port: int, retries: int):
    async def main():
        session = MobileNodeSession(HA, HOME, IPv4Address("203.0.113.5"), SA)
        async with RegistrationClient(("127.0.0.1", port), timeout=0.2, retries=retries) as client:
            result = await client.transact(session, session.build)
            return result, client.stats

    return asyncio.run(main())


def _with_stand_in(retries: int):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    stop, answers = threading.Event(), []
    thread = threading.Thread(target=_stand_in, args=(sock, stop, answers), daemon=True)
    thread.start()
    try:
        return _transact(sock.getsockname()[1], retries), answers
    finally:
        stop.set()
        thread.join()
        sock.close()


def test_a_forged_denial_does_not_end_the_registration():
    (result, stats), answers = _with_stand_in(retries=3)
    assert answers[:2] == [131, 131]  # the forger answered first, twice
    assert result.outcome is not None and result.outcome.code == 0 and result.outcome.authenticated
    assert stats.unauthenticated >= 1 and result.attempts == 2


def test_an_unauthenticated_denial_is_reported_as_such_only_when_nothing_else_came():
    (result, stats), answers = _with_stand_in(retries=0)
    assert answers == [131]
    assert result.outcome is not None and result.outcome.code == 131 and not result.outcome.authenticated
    assert stats.codes[131] == 1
