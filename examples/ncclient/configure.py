"""Configure a virtual router with a home agent and mobile nodes, through the candidate datastore.

    python examples/ncclient/configure.py --vr lab --netns mipha-lab-ha --ha 192.0.2.1 \
        --home-interface home0 --nodes 10 --first 192.0.2.10

Each mobile node gets a static home address and an HMAC-MD5 security association (SPI 256) with the
key given by --key; the edit is validated, committed and confirmed in one go.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from _connect import NS, arguments, connect


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--vr", default="lab")
    parser.add_argument("--netns", help="network namespace (default mipha-<vr>)")
    parser.add_argument("--ha", required=True, help="home agent address")
    parser.add_argument("--home-interface")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--first", required=True, help="first home address")
    parser.add_argument("--key", default="00112233445566778899aabbccddeeff", help="MN-HA key, hex")
    args = parser.parse_args()
    key = ":".join(args.key[i : i + 2] for i in range(0, len(args.key), 2))
    first = int(IPv4Address(args.first))
    nodes = "".join(
        f"<mobile-node><name>mn{i}</name><home-address>{IPv4Address(first + i)}</home-address>"
        f"<security-association><spi>256</spi><key>{key}</key></security-association></mobile-node>"
        for i in range(args.nodes)
    )
    netns = f"<netns>{args.netns}</netns>" if args.netns else ""
    home_if = f"<home-interface>{args.home_interface}</home-interface>" if args.home_interface else ""
    config = f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
  <virtual-routers xmlns="{NS}"><virtual-router><name>{args.vr}</name>{netns}
    <home-agent><address>{args.ha}</address>{home_if}</home-agent>{nodes}
  </virtual-router></virtual-routers></config>"""
    with connect(args) as m, m.locked("candidate"):
        m.discard_changes()
        m.edit_config(target="candidate", config=config)
        m.validate(source="candidate")
        m.commit()
    print(f"virtual router {args.vr}: home agent {args.ha}, {args.nodes} mobile node(s) committed")


if __name__ == "__main__":
    main()
