"""A NETCONF server process for crash tests: `python nc_child.py STATE_DIR`; prints its port, serves forever."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from server.app import start_server
from server.auth import User, hash_password
from server.config import ServerConfig

USER, PASSWORD = "admin", "crash-test"


async def main(state_dir: Path) -> None:
    cfg = ServerConfig(
        state_dir=state_dir,
        port=0,
        users=[User(USER, hash_password(PASSWORD), (), frozenset({"admin"}))],
        auth_fail_delay=0.0,
    )
    handle = await start_server(cfg, replay=True)
    print(handle.port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
