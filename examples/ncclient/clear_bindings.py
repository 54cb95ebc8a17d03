"""Clear bindings with the clear-bindings RPC: all of a virtual router, or one home address / NAI / CoA.

python examples/ncclient/clear_bindings.py --vr lab [--home 192.0.2.10 | --nai x@y | --coa 198.51.100.7]
"""

from __future__ import annotations

from _connect import NS, arguments, connect
from lxml import etree


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--vr", default="lab")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--home")
    which.add_argument("--nai")
    which.add_argument("--coa")
    args = parser.parse_args()
    selector = ""
    if args.home:
        selector = f"<home-address>{args.home}</home-address>"
    elif args.nai:
        selector = f"<nai>{args.nai}</nai>"
    elif args.coa:
        selector = f"<care-of-address>{args.coa}</care-of-address>"
    rpc = etree.fromstring(
        f'<clear-bindings xmlns="{NS}"><virtual-router>{args.vr}</virtual-router>{selector}</clear-bindings>'
    )
    with connect(args) as m:
        reply = etree.fromstring(m.dispatch(rpc).xml.encode())
    print(f"cleared {reply.findtext(f'.//{{{NS}}}cleared')} binding(s)")


if __name__ == "__main__":
    main()
