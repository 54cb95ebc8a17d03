"""One redundancy-group member as a child process, for the etcd failover tests.

``python member_proc.py NODE TTL ENDPOINT...``: joins group ``test``; while active it replicates bursts
of 16 binding records (keys ``10.0.<n>.<i>``) and prints ``ACK <time> <home>`` for each one only
after the replicator confirmed it; ``ACTIVE <time> <token>`` / ``STANDBY <time> <reason> <fence>`` on role
changes (``fence``: when ``Member.active`` turned false by the clock).  Lines are flushed at once: the test reads them, then kills this process with SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from mipha.journal import BindingRecord
from mipha.redundancy import Fenced, Member, RedundancyConfig


def say(*words: object) -> None:
    print(*words, flush=True)


async def main(node: str, ttl: int, endpoints: list[str]) -> None:
    eps = tuple((u.split("//")[1].split(":")[0], int(u.rsplit(":", 1)[1])) for u in endpoints)
    config = RedundancyConfig(eps, "test", node, ttl)
    active = asyncio.Event()

    async def on_active(token: int) -> None:
        say("ACTIVE", time.time(), token)
        active.set()

    async def on_standby(reason: str) -> None:
        active.clear()
        # the fence: the wall-clock moment after which Member.active said no (by the clock, however
        # late this callback runs on a loaded box)
        fence = time.time() - (asyncio.get_running_loop().time() - member.fence_at)
        say("STANDBY", time.time(), reason.replace(" ", "_"), fence)

    member = Member(config, on_active=on_active, on_standby=on_standby)
    await member.start()
    burst = 0
    while True:
        await active.wait()
        burst += 1
        records = [
            BindingRecord("vr", f"10.{burst // 256 % 256}.{burst % 256}.{i}", "192.0.2.10", "mn", "192.0.2.10",
                          434, 600, time.time(), burst, 0, "ipip")
            for i in range(16)
        ]  # fmt: skip
        try:
            await member.replicator.submit(records)
        except Fenced as exc:
            say("FENCED", time.time(), str(exc).replace(" ", "_"))
            continue
        now = time.time()
        for r in records:
            say("ACK", now, r.home_address)
        await asyncio.sleep(0.005)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:]))
