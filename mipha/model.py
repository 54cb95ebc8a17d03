"""The identity of mipha's YANG module (its namespace and prefix), for the application side."""

MODULE = "mipha-home-agent"
NAMESPACE = "urn:mipha:yang:mipha-home-agent"
PREFIX = "mipha"
