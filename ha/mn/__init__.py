"""mipha mn: a Mobile IPv4 mobile-node simulator and registration load generator."""
