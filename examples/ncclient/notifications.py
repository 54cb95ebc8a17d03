"""Subscribe to the NETCONF stream and print mipha's binding events as they happen.

python examples/ncclient/notifications.py [--count N] [--created-only]
"""

from __future__ import annotations

from _connect import NS, arguments, connect
from lxml import etree


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--count", type=int, default=0, help="stop after N events (0: until Ctrl-C)")
    parser.add_argument("--created-only", action="store_true", help="a server-side filter: binding-created")
    args = parser.parse_args()
    flt = ("subtree", f'<binding-created xmlns="{NS}"/>') if args.created_only else None
    seen = 0
    with connect(args) as m:
        m.create_subscription(filter=flt)
        while not args.count or seen < args.count:
            n = m.take_notification(block=True, timeout=1)
            if n is None:
                continue
            for event in etree.fromstring(n.notification_xml.encode()):
                if etree.QName(event).namespace != NS:
                    continue  # RFC 6470 events (config changes, sessions) are on the same stream
                fields = " ".join(f"{etree.QName(c).localname}={c.text}" for c in event)
                print(f"{etree.QName(event).localname} {fields}", flush=True)
                seen += 1


if __name__ == "__main__":
    main()
