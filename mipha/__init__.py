"""mipha — a Mobile IPv4 home agent managed over NETCONF/YANG."""

__version__ = "0.1.0"
