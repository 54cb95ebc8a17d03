"""AAA figures: first registrations through a real FreeRADIUS, cached renewals, FreeRADIUS's own ceiling.

In a network namespace it creates: FreeRADIUS 3.2 (tests/aaa/raddb plus N generated subscribers,
Framed-Pool + ERX key), `mipha run` configured over NETCONF with `authentication aaa`, and
`mipha mn load` from inside the namespace.  Printed beside each other, same run:

* FreeRADIUS's ceiling: a bare asyncio loop of Access-Requests (mipha's codec, 256 in flight);
* first registrations, each needing an Access-Request (rate, p50/p99);
* renewals of the same, now cached AAA nodes (no RADIUS).

    .venv/bin/python bench/aaa.py [--count 5000] [--rate 2500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "daemon"))
sys.path.insert(0, str(ROOT / "tests" / "aaa"))
sys.path.insert(0, str(ROOT))
from daemon_harness import MIPHA, NS, Daemon, free_port  # noqa: E402
from freeradius import FreeRadius  # noqa: E402

from ha.aaa import radius  # noqa: E402
from ha.transport import open_udp_socket  # noqa: E402

HA = "10.77.255.1"
SECRET = "bench-secret"
KEY = "bench-mn-ha-key-0123456789"


def users(count: int) -> str:
    return "".join(
        f'bench{i}@example.net\tCleartext-Password := "lookup-pass"\n'
        f'\tFramed-Pool = "bench-pool",\n\tERX-Mobile-IP-SPI = 256,\n\tERX-Mobile-IP-Key = "{KEY}"\n\n'
        for i in range(1, count + 1)
    )


def config(netns: str) -> str:
    return f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<virtual-routers xmlns="{NS}"><virtual-router><name>bench</name><netns>{netns}</netns>
  <home-agent><address>{HA}</address><max-lifetime>3600</max-lifetime>
    <authentication>aaa</authentication></home-agent>
  <aaa><server><address>127.0.0.1</address><secret>{SECRET}</secret></server>
    <lookup-password>lookup-pass</lookup-password><accounting>false</accounting></aaa>
  <address-pool><name>bench-pool</name><range><start>10.90.0.1</start><end>10.90.255.254</end></range></address-pool>
</virtual-router></virtual-routers></config>"""


async def radius_ceiling(netns: str, count: int) -> dict:
    """Access-Requests to FreeRADIUS as fast as a bare loop sends them (256 in flight)."""
    sock = open_udp_socket("127.0.0.1", 0, netns)
    loop = asyncio.get_running_loop()
    waiting: dict[int, tuple[asyncio.Future, float]] = {}
    latencies: list[float] = []

    def readable() -> None:
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return
            entry = waiting.pop(data[1], None)
            if entry is not None and not entry[0].done():
                entry[0].set_result(None)
                latencies.append(time.perf_counter() - entry[1])

    loop.add_reader(sock.fileno(), readable)
    free = asyncio.Queue()
    for i in range(256):
        free.put_nowait(i)

    async def one(i: int) -> None:
        ident = await free.get()
        attributes = radius.attribute(radius.Attr.USER_NAME, f"bench{i % count + 1}@example.net".encode())
        data = radius.access_request(
            ident, os.urandom(16), SECRET.encode(), attributes, password=b"lookup-pass"
        )
        future = loop.create_future()
        waiting[ident] = (future, time.perf_counter())
        sock.sendto(data, ("127.0.0.1", 1812))
        try:
            await asyncio.wait_for(future, 2)
        except TimeoutError:
            waiting.pop(ident, None)
        free.put_nowait(ident)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - start
    loop.remove_reader(sock.fileno())
    sock.close()
    latencies.sort()
    return {
        "answers": len(latencies),
        "rate": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


def load(netns: str, count: int, rate: float, duration: float) -> dict:
    command = [
        "ip", "netns", "exec", netns, MIPHA, "mn", "--ha", HA, "--key", KEY.encode().hex(), "--spi", "256",
        "--lifetime", "3600", "--json", "load", "--count", str(count),
        "--nai-pattern", "bench{i}@example.net",
        "--coa", "10.88.0.1", "--rate", str(rate), "--duration", str(duration), "--window", "4096",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    if done.returncode not in (0, 1):
        raise SystemExit(done.stdout + done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=2500)
    args = parser.parse_args()
    netns = f"mipha-bench-aaa-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    radiusd = daemon = None
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", netns, "addr", "add", f"{HA}/32", "dev", "lo"], check=True)
        tmp = Path(tempfile.mkdtemp(prefix="mipha-bench-aaa-"))
        radiusd = FreeRadius(tmp / "raddb", secret=SECRET, netns=netns)
        radiusd.append_users(users(args.count))
        radiusd.start()
        ceiling = asyncio.run(radius_ceiling(netns, args.count))
        daemon = Daemon(tmp, free_port())
        daemon.start()
        with daemon.connect() as m:
            m.edit_config(target="running", config=config(netns))
        duration = args.count / args.rate
        first = load(netns, args.count, args.rate, duration)
        renewals = load(netns, args.count, 0, 3.0)
        print(
            json.dumps(
                {"freeradius_ceiling": ceiling, "first_registrations": first, "cached_renewals": renewals},
                indent=1,
            )
        )
        print(
            f"FreeRADIUS alone (bare loop): {ceiling['rate']:.0f} Access-Requests/s, "
            f"p99 {ceiling['p99_ms']} ms\n"
            f"first registrations via RADIUS: {first['rate']:.0f}/s offered {args.rate:.0f}/s, "
            f"accepted {first['accepted']}/{first['transactions']}, p50 {first['latency_ms']['p50']} ms, "
            f"p99 {first['latency_ms']['p99']} ms\n"
            f"cached AAA renewals (unpaced): {renewals['rate']:.0f}/s, p99 {renewals['latency_ms']['p99']} ms"
        )
    finally:
        if daemon is not None:
            daemon.stop()
        if radiusd is not None:
            radiusd.stop()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


if __name__ == "__main__":
    main()
