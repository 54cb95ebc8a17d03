"""NACM cost: the same reads by the superuser (no rules) and by a user under 100 rules, in-process.

The data of bench/state_get.py (one virtual router, N configured mobile nodes with one key each, N
bindings handed over as raw bytes) plus a /nacm of 100 rules for the user's group: the rules of
examples/nacm-operators.xml (keys and /nacm hidden, read-only operations permitted) and 90 path rules
with list-key predicates (`virtual-router[name='vrK']/foreign-agent`, routers that do not exist),
placed before the catch-all read rule so that they are candidates for every node. Figures are the
median of --rounds runs until the reply bytes exist; the ratio is the user's over the superuser's.

    .venv/bin/python bench/nacm.py [--nodes 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from state_get import KEY, NC, FakeBindings, M, running, timed

from server.app import build_core
from server.config import ServerConfig
from server.nacm import NACM_TAG, Principal
from server.operations import op_get, op_get_config
from server.tree import Forest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nacm-operators.xml"


def nacm_tree(filler: int) -> etree._Element:
    """examples/nacm-operators.xml with `filler` predicate path rules inserted before read-all."""
    root = etree.parse(str(EXAMPLE)).getroot()
    nacm = root.find(NACM_TAG)
    n = nacm.nsmap[None]
    readers = nacm.find(f"{{{n}}}rule-list")
    read_all = readers.findall(f"{{{n}}}rule")[-1]
    for k in range(filler):
        r = etree.Element(f"{{{n}}}rule")
        etree.SubElement(r, f"{{{n}}}name").text = f"hide-fa-{k}"
        etree.SubElement(
            r, f"{{{n}}}path"
        ).text = f"/mipha:virtual-routers/mipha:virtual-router[mipha:name='vr{k}']/mipha:foreign-agent"
        etree.SubElement(r, f"{{{n}}}access-operations").text = "read"
        etree.SubElement(r, f"{{{n}}}action").text = "deny"
        read_all.addprevious(r)
    return nacm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n = args.nodes
    nacm = nacm_tree(90)
    rules = len(nacm.findall(f".//{{{nacm.nsmap[None]}}}rule"))
    with tempfile.TemporaryDirectory() as tmp:
        core = build_core(ServerConfig(state_dir=Path(tmp)), None, [], [])
        core.ds.running = Forest([*running(n), nacm])
        core.providers[:] = [FakeBindings(n, True)]
        admin = SimpleNamespace(core=core, principal=Principal("admin", frozenset({"admin"})))
        user = SimpleNamespace(core=core, principal=Principal("noc", frozenset({"operators"})))
        all_b = etree.fromstring(
            f'<get xmlns="{NC}"><filter type="subtree"><virtual-routers xmlns="{M}"><virtual-router>'
            "<home-agent><bindings/></home-agent></virtual-router></virtual-routers></filter></get>"
        )
        get = etree.fromstring(f'<get xmlns="{NC}"/>')
        cfg = etree.fromstring(f'<get-config xmlns="{NC}"><source><running/></source></get-config>')
        reply = b"".join(op_get(user, get))
        assert KEY.encode() not in reply and b"rule-list" not in reply, "the user read what it may not"
        assert reply.count(b"<binding ") == n, "bindings missing from the user's reply"
        cases = [
            (f"<get> all {n} bindings (subtree filter)", lambda s: op_get(s, all_b)),
            (f"<get> everything ({n} mobile nodes + {n} bindings)", lambda s: op_get(s, get)),
            (f"<get-config> of {n} mobile nodes", lambda s: op_get_config(s, cfg)),
        ]
        print(f"{rules} NACM rules for the user's group; CPU ms (median), user / superuser")
        print(f"{'':<52} {'superuser':>10} {'user':>10}   ratio")
        for what, fn in cases:
            _t, c_admin, _s = timed(lambda fn=fn: fn(admin), args.rounds)
            _t, c_user, _s = timed(lambda fn=fn: fn(user), args.rounds)
            print(f"{what:<52} {c_admin * 1000:10.1f} {c_user * 1000:10.1f}   x{c_user / c_admin:5.2f}")
        print(f"policy compilations: {core.nacm.compilations}")
        core.close()


if __name__ == "__main__":
    main()
