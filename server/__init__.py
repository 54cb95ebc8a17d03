"""A NETCONF server: SSH transport, sessions, datastores and YANG validation (libyang), no application."""
