"""Mobile nodes renewing continuously, for the daemon failover test (run in the mobile node's namespace).

``python failover_load.py HA COA HOME_START COUNT INTERVAL DURATION``: ``COUNT`` nodes with consecutive
home addresses from ``HOME_START``, each registering (lifetime 600 s, HMAC-MD5, SPI 256, the test key)
again ``INTERVAL`` seconds after its previous transaction ended, for ``DURATION`` seconds.  Every
accepted reply prints ``ACK <unix time> <home address>`` at once; a transaction that got no reply after
its retransmissions prints ``LOST <time> <home>``; ``DONE`` at the end.  SIGUSR1 ends the run early:
each node finishes the transaction it is in, then stops (the test ends the load once it saw what it
waits for, however long the steps before took on a slow box).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ha.mn.client import RegistrationClient
from ha.mn.session import MobileNodeSession
from ha.protocol import SecurityAssociation
from ha.protocol.constants import AuthAlgorithm, ReplayProtection

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


def say(*words: object) -> None:
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


async def main(ha: str, coa: str, home_start: str, count: int, interval: float, duration: float) -> None:
    sa = SecurityAssociation(256, KEY, AuthAlgorithm.HMAC_MD5, ReplayProtection.TIMESTAMP)
    sessions = [
        MobileNodeSession(
            home_agent=IPv4Address(ha),
            home_address=IPv4Address(home_start) + i,
            care_of_address=IPv4Address(coa),
            sa=sa,
            lifetime=600,
        )
        for i in range(count)
    ]
    end = [time.monotonic() + duration]
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGUSR1, lambda: end.__setitem__(0, time.monotonic())
    )
    async with RegistrationClient(
        (ha, 434), bind=(coa, 0), timeout=0.5, retries=8, max_timeout=1.0
    ) as client:

        async def node(session: MobileNodeSession, delay: float) -> None:
            await asyncio.sleep(delay)
            while time.monotonic() < end[0]:
                future = client.start(session, session.build, future=True)
                assert future is not None
                result = await future
                if result.outcome is not None and result.outcome.code in (0, 1):
                    say("ACK", time.time(), session.home_address)
                elif result.outcome is None:
                    say("LOST", time.time(), session.home_address)
                else:
                    say("DENIED", time.time(), session.home_address, result.outcome.code)
                await asyncio.sleep(interval)

        await asyncio.gather(*(node(s, interval * i / count) for i, s in enumerate(sessions)))
    say("DONE", time.time())


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], int(a[3]), float(a[4]), float(a[5])))
