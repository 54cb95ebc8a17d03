"""kill -9 / restart reconciliation, shared by the tun test (this kernel) and the ipip run inside UML.

A child process programs bindings (tunnels to two CoAs, host routes, proxy entries, the policy rule) and
is killed with SIGKILL.  Foreign objects that only *look* like mipha's (a route in mipha's table with
another protocol, a route with mipha's protocol in the main table, a proxy entry without protocol, a rule
to mipha's table without protocol) are planted around it.  A fresh backend then resyncs with a smaller
desired state: afterwards exactly the desired objects exist, nothing stale survives and every foreign
object is untouched; ``stop(flush=True)`` then leaves zero mipha objects.

``python dataplane_restart.py <kind>`` runs it (exit status 0 = pass); ``child`` is the victim process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from dataplane_scenario import Failure, check, kernel_objects, sh

from ha.dataplane.base import DesiredBinding, VirtualRouterPlane
from ha.dataplane.factory import create_backend
from ha.dataplane.intents import EnsureTunnel, ProxyArp, SetHomeRoute

HA_ADDR = IPv4Address("10.1.0.1")
COA_A = IPv4Address("192.0.2.10")
COA_B = IPv4Address("192.0.2.11")
COA_C = IPv4Address("192.0.2.12")
BASE = IPv4Address("10.1.0.100")
COUNT = 40


def home(i: int) -> IPv4Address:
    return BASE + i


def vr(ns: str) -> VirtualRouterPlane:
    return VirtualRouterPlane(name="r", netns=ns, ha_address=HA_ADDR, home_interface="home0")


async def _child(kind: str, ns: str) -> None:
    plane = create_backend(kind, vr(ns))
    await plane.start()
    intents: list = [EnsureTunnel(COA_A), EnsureTunnel(COA_B)]
    for i in range(COUNT):
        coa = COA_A if i % 2 else COA_B
        intents += [SetHomeRoute(home(i), (coa,)), ProxyArp(home(i), True)]
    await plane.apply(intents)
    print("ready", flush=True)
    await asyncio.sleep(3600)


def ours(ns: str) -> dict[str, list[str]]:
    return kernel_objects(ns)


def foreign(ns: str) -> list[str]:
    """The planted look-alikes, as ``ip`` prints them (must be identical before and after)."""
    return [
        sh(f"ip -n {ns} route show table 434 10.1.0.200").strip(),
        sh(f"ip -n {ns} route show table main 10.1.0.201").strip(),
        sh(f"ip -n {ns} neigh show proxy 10.1.0.202").strip(),
        sh(f"ip -n {ns} rule show pref 435").strip(),
    ]


def run_restart(kind: str, log: Callable[[str], None] = print) -> None:
    ns = f"mt-rs-{os.getpid():x}{uuid.uuid4().hex[:6]}"
    child: subprocess.Popen[str] | None = None
    try:
        sh(f"ip netns add {ns}")
        sh(f"ip -n {ns} link set lo up")
        sh(f"ip -n {ns} link add home0 type veth peer name peer0")
        sh(f"ip -n {ns} addr add {HA_ADDR}/24 dev home0")
        sh(f"ip -n {ns} link set home0 up")
        sh(f"ip -n {ns} link set peer0 up")
        sh(f"ip -n {ns} route add 10.1.0.200/32 dev home0 table 434")
        sh(f"ip -n {ns} route add 10.1.0.201/32 dev home0 proto 245")
        sh(f"ip -n {ns} neigh add proxy 10.1.0.202 dev home0")
        sh(f"ip -n {ns} rule add pref 435 lookup 434")
        planted = foreign(ns)
        check(all(planted), f"could not plant foreign objects: {planted}")

        child = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "child", kind, ns],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        line = child.stdout.readline()
        check(line.strip() == "ready", f"child did not program its state (said {line!r})")
        before = ours(ns)
        check(len(before["proxies"]) == COUNT and len(before["rules"]) == 1, f"child state: {before}")
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        left = ours(ns)
        check(left["rules"] and left["proxies"], f"SIGKILL left nothing to reconcile: {left}")
        log(f"{kind}: killed -9 with {len(left['proxies'])} proxies, {len(left['routes'])} routes left")

        desired = [DesiredBinding(home(i), (COA_A,)) for i in range(0, COUNT, 4)]
        desired.append(DesiredBinding(home(COUNT + 1), (COA_C,)))

        async def restart() -> None:
            plane = create_backend(kind, vr(ns))
            await plane.start()
            try:
                t0 = time.monotonic()
                await plane.resync(desired)
                log(f"{kind}: resync took {time.monotonic() - t0:.3f}s")
                after = ours(ns)
                want = {str(b.home_address) for b in desired}
                routes = {r.split()[0] for r in after["routes"]}
                proxies = {p.split()[0] for p in after["proxies"]}
                check(routes == want, f"routes after resync: {sorted(routes ^ want)} differ")
                check(proxies == want, f"proxies after resync: {sorted(proxies ^ want)} differ")
                check(len(after["rules"]) == 1, f"rules after resync: {after['rules']}")
                if kind == "ipip":
                    want_links = sorted(f"mip-{int(c):08x}" for c in (COA_A, COA_C))
                    check(sorted(after["links"]) == want_links, f"links after resync: {after['links']}")
                    for b in desired:
                        dev = f"mip-{int(b.care_of_addresses[0]):08x}"
                        route = sh(f"ip -n {ns} route show table 434 {b.home_address}")
                        check(f"dev {dev}" in route, f"{b.home_address} not routed into {dev}: {route}")
                counts = {t.care_of_address: t.binding_count for t in plane.tunnels()}
                check(counts == {COA_A: len(desired) - 1, COA_C: 1}, f"tunnel refcounts: {counts}")
                check(foreign(ns) == planted, f"foreign objects changed: {foreign(ns)} != {planted}")
            finally:
                await plane.stop(flush=True)

        asyncio.run(restart())
        final = ours(ns)
        check(all(not v for v in final.values()), f"objects left after stop: {final}")
        check(foreign(ns) == planted, "foreign objects changed by stop")
        log(f"{kind}: zero stale objects, foreign objects untouched")
    finally:
        if child is not None and child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def main(argv: list[str]) -> int:
    if argv[1] == "child":
        asyncio.run(_child(argv[2], argv[3]))
        return 0
    try:
        run_restart(argv[1])
    except Failure as exc:
        print(f"RESTART FAILED ({argv[1]}): {exc}", flush=True)
        return 1
    print(f"RESTART PASSED ({argv[1]})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
