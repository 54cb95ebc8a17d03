"""RESTCONF (RFC 8040, RFC 8072 YANG Patch, RFC 8527 NMDA) over the NETCONF server's core.

One transaction path, one NACM, one event log: every request is translated into the NETCONF
layer's own operations (get-data, edit-config, the registered rpcs) and run as a short-lived
session of the authenticated user. Nothing here knows the application's modules.
"""
