"""AAA for the home agent: RADIUS bytes, MN-AAA as CHAP, Access-Accept → subscriber profile,
accounting sessions; all sans-I/O (``mipha.aaa`` holds the sockets)."""
