"""Namespace URIs and capability URNs used across the NETCONF layer (one place, no typos)."""

NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
NC_BASE_10 = "urn:ietf:params:netconf:base:1.0"
NC_BASE_11 = "urn:ietf:params:netconf:base:1.1"
NOTIF_NS = "urn:ietf:params:xml:ns:netconf:notification:1.0"
NCN_NS = "urn:ietf:params:xml:ns:netmod:notification"
WD_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-with-defaults"
WD_ATTR_NS = "urn:ietf:params:xml:ns:netconf:default:1.0"
MON_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
YANGLIB_NS = "urn:ietf:params:xml:ns:yang:ietf-yang-library"
NCNOTIF_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-notifications"
NMDA_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-nmda"
DS_NS = "urn:ietf:params:xml:ns:yang:ietf-datastores"
NACM_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"

CAP_CANDIDATE = "urn:ietf:params:netconf:capability:candidate:1.0"
CAP_CONFIRMED = "urn:ietf:params:netconf:capability:confirmed-commit:1.1"
CAP_ROLLBACK = "urn:ietf:params:netconf:capability:rollback-on-error:1.0"
CAP_VALIDATE = "urn:ietf:params:netconf:capability:validate:1.1"
CAP_STARTUP = "urn:ietf:params:netconf:capability:startup:1.0"
CAP_XPATH = "urn:ietf:params:netconf:capability:xpath:1.0"
CAP_NOTIFICATION = "urn:ietf:params:netconf:capability:notification:1.0"
CAP_INTERLEAVE = "urn:ietf:params:netconf:capability:interleave:1.0"
CAP_WITH_DEFAULTS = (
    "urn:ietf:params:netconf:capability:with-defaults:1.0"
    "?basic-mode=explicit&also-supported=report-all,report-all-tagged,trim"
)
CAP_YANG_LIBRARY = "urn:ietf:params:netconf:capability:yang-library:1.1"


def q(ns: str, name: str) -> str:
    """Clark notation {ns}name."""
    return f"{{{ns}}}{name}"
