"""The ncclient example scripts work against a real daemon, as a user would run them."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

from daemon_harness import KEY_HEX, MIPHA, Daemon
from free_ports import free_port
from lxml import etree

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "ncclient"
MON = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"


def script(name: str, port: int, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / name), "--port", str(port), "--password", "e2e-secret", *args]


def wait_subscribed(daemon: Daemon, timeout: float = 60) -> None:
    """Until another NETCONF session than the one asking has sent its first <rpc> (the listener's
    create-subscription: a session handles its rpcs in order, so the subscription exists by then)."""
    flt = f'<netconf-state xmlns="{MON}"><sessions/></netconf-state>'
    deadline = time.monotonic() + timeout
    with daemon.connect() as m:
        while True:
            root = etree.fromstring(m.get(filter=("subtree", flt)).data_xml.encode())
            others = [
                s for s in root.iter(f"{{{MON}}}session")
                if s.findtext(f"{{{MON}}}session-id") != str(m.session_id)
            ]  # fmt: skip
            if any(int(s.findtext(f"{{{MON}}}in-rpcs") or 0) >= 1 for s in others):
                return
            assert time.monotonic() < deadline, "the notification listener did not subscribe"
            time.sleep(0.1)


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
        wait_subscribed(daemon)  # the subscription exists before the event
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


def test_bindings_keep_their_namespace_under_a_prefixed_configuration(tmp_path: Path) -> None:
    """Raw binding entries inherit the namespace of their <bindings> placeholder: that must hold even
    when the running configuration was written with a prefix (the server moves the placeholder into it)."""
    from daemon_harness import KEY_YANG, NS

    tag = uuid.uuid4().hex[:6]
    vr, netns = f"px{tag}", f"mipha-px-{tag}"
    daemon = Daemon(tmp_path, free_port())
    try:
        daemon.start()
        with daemon.connect() as m:
            m.edit_config(
                target="running",
                config=f"""<nc:config xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0">
<m:virtual-routers xmlns:m="{NS}"><m:virtual-router><m:name>{vr}</m:name><m:netns>{netns}</m:netns>
<m:home-agent><m:address>192.0.2.1</m:address></m:home-agent>
<m:mobile-node><m:name>mn1</m:name><m:home-address>192.0.2.11</m:home-address>
<m:security-association><m:spi>256</m:spi><m:key>{KEY_YANG}</m:key></m:security-association>
</m:mobile-node></m:virtual-router></m:virtual-routers></nc:config>""",
            )
            reg = subprocess.run(
                ["ip", "netns", "exec", netns, MIPHA, "mn", "--ha", "192.0.2.1", "--spi", "256", "--key", KEY_HEX,
                 "register", "--home", "192.0.2.11", "--coa", "198.51.100.9"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert reg.returncode == 0, reg.stdout + reg.stderr
            for flt in (
                None,
                (
                    "subtree",
                    f'<m:virtual-routers xmlns:m="{NS}"><m:virtual-router><m:home-agent><m:bindings/></m:home-agent></m:virtual-router></m:virtual-routers>',
                ),
            ):
                data = etree.fromstring(m.get(filter=flt).data_xml.encode())
                (binding,) = data.iter(f"{{{NS}}}binding")
                assert binding.findtext(f"{{{NS}}}home-address") == "192.0.2.11"
                assert all(etree.QName(c).namespace == NS for c in binding)
    finally:
        daemon.stop()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
