"""mipha home agent: the registration protocol (sans-I/O), the engine and the data plane backends."""
