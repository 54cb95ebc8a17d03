"""The ncclient example scripts work against a real daemon, as a user would run them."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

from daemon_harness import KEY_HEX, MIPHA, Daemon, free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "ncclient"


def script(name: str, port: int, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / name), "--port", str(port), "--password", "e2e-secret", *args]


def test_configure_bindings_notifications_clear(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    vr, netns = f"ex{tag}", f"mipha-ex-{tag}"
    daemon = Daemon(tmp_path, free_port())
    listener = None
    try:
        daemon.start()
        port = daemon.port
        out = subprocess.run(
            script("configure.py", port, "--vr", vr, "--netns", netns, "--ha", "192.0.2.1", "--nodes", "3", "--first", "192.0.2.10"),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "3 mobile node(s) committed" in out.stdout
        listener = subprocess.Popen(
            script("notifications.py", port, "--count", "1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)  # let the subscription start before the event
        reg = subprocess.run(
            ["ip", "netns", "exec", netns, MIPHA, "mn", "--ha", "192.0.2.1", "--spi", "256", "--key", KEY_HEX,
             "register", "--home", "192.0.2.11", "--coa", "198.51.100.9"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert reg.returncode == 0, reg.stdout + reg.stderr
        events, err = listener.communicate(timeout=30)
        assert "binding-created" in events and "home-address=192.0.2.11" in events, err
        table = subprocess.run(
            script("bindings.py", port, "--vr", vr), capture_output=True, text=True, timeout=60
        )
        assert (
            "192.0.2.11" in table.stdout and "198.51.100.9" in table.stdout and "1 binding(s)" in table.stdout
        )
        one = subprocess.run(
            script("bindings.py", port, "--vr", vr, "--home", "192.0.2.10"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "0 binding(s)" in one.stdout
        cleared = subprocess.run(
            script("clear_bindings.py", port, "--vr", vr, "--home", "192.0.2.11"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "cleared 1 binding(s)" in cleared.stdout, cleared.stderr
    finally:
        if listener is not None and listener.poll() is None:
            listener.kill()
            listener.wait(timeout=10)
        daemon.stop()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
