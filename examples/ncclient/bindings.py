"""Print the binding table of a virtual router (or one home address's bindings).

    python examples/ncclient/bindings.py --vr lab [--home 192.0.2.10]

The filter names the key when --home is given: the server then builds one binding, not all of them.
"""

from __future__ import annotations

from _connect import NS, arguments, connect
from lxml import etree


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--vr", default="lab")
    parser.add_argument("--home", help="only this home address")
    args = parser.parse_args()
    match = f"<home-address>{args.home}</home-address>" if args.home else ""
    flt = (
        f'<virtual-routers xmlns="{NS}"><virtual-router><name>{args.vr}</name><home-agent><bindings>'
        f"<binding>{match}</binding></bindings></home-agent></virtual-router></virtual-routers>"
    )
    with connect(args) as m:
        data = etree.fromstring(m.get(filter=("subtree", flt)).data_xml.encode())
    rows = [
        {etree.QName(leaf).localname: leaf.text for leaf in binding}
        for binding in data.iter(f"{{{NS}}}binding")
    ]
    columns = (
        "home-address",
        "care-of-address",
        "mobile-node",
        "lifetime-remaining",
        "flags",
        "tunnel-interface",
    )
    print("  ".join(f"{c:<18}" for c in columns))
    for row in rows:
        print("  ".join(f"{row.get(c) or '-':<18}" for c in columns))
    print(f"{len(rows)} binding(s)")


if __name__ == "__main__":
    main()
