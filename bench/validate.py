"""Validation time of a whole configuration with 10k and 100k mobile nodes (issue: Foundation).

Prints the time :class:`server.validation.Validator` needs for a whole document (libyang parse +
validate: types, must, unique, leafref, mandatory) as the NETCONF server hands it over — an lxml
tree, since the request was parsed when it was received — and, for transparency, the same from raw
bytes (hardened XML parse included).  Baseline measured in the same run: lxml alone parsing the
bytes.  Targets (on the tree figure): <= 0.2 s for 10k, <= 2 s for 100k, ratio 100k/10k <= 12.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lxml import etree

from server.validation import Validator

KEY = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"


def config_document(n: int) -> bytes:
    """A valid configuration: one virtual router, one pool, ``n`` mobile nodes (half static, half NAI)."""
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    parts = [
        '<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">',
        '<virtual-routers xmlns="urn:mipha:yang:mipha-home-agent"><virtual-router><name>home</name>',
        "<router-id>192.0.2.1</router-id><home-agent><address>192.0.2.1</address></home-agent>",
        "<address-pool><name>pool</name><range><start>172.16.0.1</start><end>172.31.255.254</end></range>"
        "</address-pool>",
    ]
    for i in range(n):
        if i % 2:
            addr = f"<nai>mn{i}@example.net</nai><address-pool>pool</address-pool>"
        else:
            addr = f"<home-address>{ipaddress.IPv4Address(base + i + 1)}</home-address>"
        parts.append(
            f"<mobile-node><name>mn{i}</name>{addr}<security-association><spi>{256 + i % 1000}</spi>"
            f"<key>{KEY}</key></security-association></mobile-node>"
        )
    parts.append("</virtual-router></virtual-routers></config>")
    return "".join(parts).encode()


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) if repeat < 3 else statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    validator = Validator()
    results = {}
    for n in (10_000, 100_000):
        doc = config_document(n)
        tree = etree.fromstring(doc)
        assert validator.validate(tree) == [], "benchmark document must be valid"
        t_validate = best_of(lambda tree=tree: validator.validate(tree), args.repeat)
        t_bytes = best_of(lambda doc=doc: validator.validate(doc), args.repeat)
        t_lxml = best_of(lambda doc=doc: etree.fromstring(doc), args.repeat)
        results[n] = t_validate
        print(
            f"validate {n:>7} mobile nodes ({len(doc) / 1e6:5.1f} MB): {t_validate:6.3f} s"
            f"   [from bytes incl. XML parse: {t_bytes:6.3f} s; baseline lxml parse only: {t_lxml:6.3f} s,"
            f" validate/lxml x{t_validate / t_lxml:4.1f}]"
        )
    ratio = results[100_000] / results[10_000]
    print(f"ratio 100k/10k: {ratio:.1f} (linear = 10; target <= 12)")
    ok = results[10_000] <= 0.2 and results[100_000] <= 2.0 and ratio <= 12
    print("targets (<= 0.2 s, <= 2 s, ratio <= 12):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
