"""<get> of operational state merged with a large running configuration, in-process (no SSH).

One virtual router with N configured mobile nodes (one SA each) and N bindings from a fake provider
that pushes the filter's home-address key down (as mipha/state.py does). Figures, each the median
of --rounds runs of `op_get` until the reply bytes exist:

1. <get> of ONE binding by key (virtual-router name + binding home-address);
2. <get> of all bindings (subtree filter .../home-agent/bindings), provider building an lxml tree;
3. the same with the provider handing the bindings over as raw bytes (StateRequest.raw), when the
   server supports it;
4. <get-config> of the N mobile nodes (the baseline the bindings get is compared with).

    .venv/bin/python bench/state_get.py [--nodes 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.app import build_core
from server.config import ServerConfig
from server.nacm import Principal
from server.operational import StateRequest, raw_placeholder
from server.operations import op_get, op_get_config
from server.tree import Forest

M = "urn:mipha:yang:mipha-home-agent"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
KEY = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"


def home(i: int) -> str:
    return f"10.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


def running(n: int) -> Forest:
    parts = [
        f'<virtual-routers xmlns="{M}"><virtual-router><name>default</name><router-id>10.64.0.1</router-id>'
    ]
    parts.append("<home-agent><address>10.64.0.1</address></home-agent>")
    for i in range(n):
        parts.append(
            f"<mobile-node><name>mn{i}</name><home-address>{home(i)}</home-address><security-association>"
            f"<spi>{256 + i}</spi><key>{KEY}</key></security-association></mobile-node>"
        )
    parts.append("</virtual-router></virtual-routers>")
    return Forest([etree.fromstring("".join(parts))])


BINDING = (
    '<binding xmlns="%s"><home-address>%s</home-address><care-of-address>192.0.2.10</care-of-address>'
    "<mobile-node>mn%d</mobile-node><source-address>192.0.2.10</source-address>"
    "<lifetime-granted>600</lifetime-granted><lifetime-remaining>599</lifetime-remaining>"
    "<registered-at>2026-11-27T09:00:00Z</registered-at><identification>1</identification>"
    "<flags>S</flags><encapsulation>ip-in-ip</encapsulation></binding>"
)


class FakeBindings:
    """N bindings; a filter naming one home-address gets only that one (push-down)."""

    roots = frozenset({(M, "virtual-routers")})

    def __init__(self, n: int, raw: bool) -> None:
        self.n, self.raw = n, raw

    def _wanted(self, request: StateRequest) -> list[int]:
        if request.subtree is not None:
            for el in request.subtree.iter(f"{{{M}}}home-address"):
                if (el.text or "").strip():
                    _a, b, c, d = (int(x) for x in el.text.strip().split("."))
                    return [((b - 64) << 16) | (c << 8) | d]
        return list(range(self.n))

    def get_state(self, request: StateRequest) -> list[etree._Element]:
        top = etree.Element(f"{{{M}}}virtual-routers", nsmap={None: M})
        vr = etree.SubElement(top, f"{{{M}}}virtual-router")
        etree.SubElement(vr, f"{{{M}}}name").text = "default"
        bindings = etree.SubElement(etree.SubElement(vr, f"{{{M}}}home-agent"), f"{{{M}}}bindings")
        wanted = self._wanted(request)
        if self.raw:
            request.raw["b"] = b"".join(BINDING.encode() % (M.encode(), home(i).encode(), i) for i in wanted)
            bindings.text = raw_placeholder("b")
        else:
            for i in wanted:
                bindings.append(etree.fromstring(BINDING % (M, home(i), i)))
        return [top]


def timed(fn, rounds: int) -> tuple[float, float, int]:
    """Median wall and CPU seconds (the box is shared: CPU time is the steadier figure), reply size."""
    wall, cpu, size = [], [], 0
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        size = sum(map(len, fn()))  # the reply body's parts
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu), size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n = args.nodes
    with tempfile.TemporaryDirectory() as tmp:
        core = build_core(ServerConfig(state_dir=Path(tmp)), None, [], [])
        core.ds.running = running(n)
        sess = SimpleNamespace(core=core, principal=Principal("admin", frozenset({"admin"})))
        key = n // 2
        one = etree.fromstring(
            f'<get xmlns="{NC}"><filter type="subtree"><virtual-routers xmlns="{M}"><virtual-router>'
            f"<name>default</name><home-agent><bindings><binding><home-address>{home(key)}</home-address>"
            "</binding></bindings></home-agent></virtual-router></virtual-routers></filter></get>"
        )
        all_b = etree.fromstring(
            f'<get xmlns="{NC}"><filter type="subtree"><virtual-routers xmlns="{M}"><virtual-router>'
            "<home-agent><bindings/></home-agent></virtual-router></virtual-routers></filter></get>"
        )
        cfg = etree.fromstring(f'<get-config xmlns="{NC}"><source><running/></source></get-config>')
        rows = []
        has_raw = "raw" in getattr(StateRequest, "__dataclass_fields__", {})
        for raw in (False, True) if has_raw else (False,):
            core.providers[:] = [FakeBindings(n, raw)]
            label = "raw bytes" if raw else "lxml tree"
            t, c, size = timed(lambda: op_get(sess, one), args.rounds)
            reply = etree.fromstring(b"".join(op_get(sess, one)))
            got = reply.findall(f".//{{{M}}}binding")
            assert len(got) == 1 and got[0].findtext(f"{{{M}}}home-address") == home(key), "wrong keyed reply"
            rows.append((f"<get> one binding by key, provider {label}", t, c, size))
            t, c, size = timed(lambda: op_get(sess, all_b), max(1, args.rounds // 2))
            rows.append((f"<get> all {n} bindings, provider {label}", t, c, size))
        t, c, size = timed(lambda: op_get_config(sess, cfg), max(1, args.rounds // 2))
        rows.append((f"<get-config> of {n} mobile nodes (baseline)", t, c, size))
        base = rows[-1][2]
        print(f"{'':<58} {'wall':>9}     {'CPU':>9}     {'reply':>7}     CPU ratio")
        for what, t, c, size in rows:
            print(
                f"{what:<58} {t * 1000:9.1f} ms  {c * 1000:9.1f} ms  {size / 1e6:7.2f} MB"
                f"  x{c / base:6.2f} of get-config"
            )
        core.close()


if __name__ == "__main__":
    main()
