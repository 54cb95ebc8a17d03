"""`mipha run` with [restconf]: the daemon's own rpcs and binding table over RESTCONF, with curl, and
the binding table's on-change updates pushed in JSON over SSE (RFC 8650).

A virtual router is configured over RESTCONF, a mobile node registers for real (`mipha mn` in the
router's namespace), its binding is read by key, clear-bindings removes it and says how many."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))
from daemon_harness import KEY_YANG, Daemon, mn_command
from free_ports import free_port
from test_subscribed import SseClient, notification

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
M = "mipha-home-agent"
JSON = "application/yang-data+json"


def rc(port: int, cert: Path, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
    args = ["curl", "-sS", "--cacert", str(cert), "-u", "admin:e2e-secret", "-X", method]
    args += ["-H", f"Content-Type: {JSON}", "-w", "\n%{http_code}", "--max-time", "20"]
    if body is not None:
        args += ["--data-binary", body]
    out = subprocess.run([*args, f"https://127.0.0.1:{port}{path}"], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    text, _, code = out.stdout.rpartition(b"\n")
    return int(code), text


def test_daemon_serves_restconf_beside_netconf(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    vr, netns = f"rc{tag}", f"mipha-rc-{tag}"
    port = free_port()
    daemon = Daemon(tmp_path, free_port(), f'[restconf]\nlisten = "127.0.0.1:{port}"\n')
    cert = tmp_path / "state" / "restconf-cert.pem"
    try:
        daemon.start()
        vr_path = f"/restconf/data/{M}:virtual-routers/virtual-router={vr}"
        body = {
            f"{M}:virtual-router": [
                {
                    "name": vr,
                    "netns": netns,
                    "home-agent": {"address": "192.0.2.1"},
                    "mobile-node": [
                        {
                            "name": "a",
                            "home-address": "192.0.2.10",
                            "security-association": [{"spi": 256, "key": KEY_YANG}],
                        }
                    ],
                }
            ]
        }
        code, text = rc(port, cert, "PUT", vr_path, json.dumps(body))
        assert code == 201, text
        ops = json.loads(rc(port, cert, "GET", "/restconf/operations")[1])["ietf-restconf:operations"]
        assert {f"{M}:clear-bindings", f"{M}:clear-statistics"} <= set(ops)
        # RFC 8650: on-change of the binding table, pushed in JSON over SSE (docs/restconf.md's example)
        establish = {
            "ietf-subscribed-notifications:input": {
                "ietf-yang-push:datastore": "ietf-datastores:operational",
                "ietf-yang-push:datastore-xpath-filter": f"/{M}:virtual-routers/virtual-router/home-agent/bindings",
                "ietf-yang-push:on-change": {"dampening-period": 0, "sync-on-start": False},
            }
        }
        code, text = rc(
            port,
            cert,
            "POST",
            "/restconf/operations/ietf-subscribed-notifications:establish-subscription",
            json.dumps(establish),
        )
        assert code == 200, text
        uri = json.loads(text)["ietf-subscribed-notifications:output"][
            "ietf-restconf-subscribed-notifications:uri"
        ]
        sse = SseClient(SimpleNamespace(cert=cert), uri, ("admin", "e2e-secret"))
        out = subprocess.run(
            mn_command(netns, "register", "--home", "192.0.2.10", "--coa", "198.51.100.9"),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        binding = f"{vr_path}/home-agent/bindings/binding=192.0.2.10,198.51.100.9"
        code, text = rc(port, cert, "GET", binding)
        assert code == 200, text
        got = json.loads(text)[f"{M}:binding"][0]
        assert got["mobile-node"] == "a" and got["care-of-address"] == "198.51.100.9"
        name, content = notification(sse.event())
        assert name == "ietf-yang-push:push-change-update"
        (edit,) = content["datastore-changes"]["yang-patch"]["edit"]
        assert edit["operation"] == "create" and edit["target"].endswith("/binding=192.0.2.10,198.51.100.9")
        pushed = edit["value"][f"{M}:binding"][0]  # a list entry: an array (RFC 7951)
        assert pushed["mobile-node"] == "a" and pushed["home-address"] == "192.0.2.10"
        # the daemon's JSON writer (a direct read) and libyang's conversion (the generic path, which
        # `depth` takes) give the same bytes, for the entry and for the table
        for path in (binding, f"{vr_path}/home-agent/bindings"):
            direct, generic = rc(port, cert, "GET", path), rc(port, cert, "GET", f"{path}?depth=65535")
            assert direct[0] == generic[0] == 200 and direct[1] == generic[1], (direct, generic)
        clear = json.dumps({f"{M}:input": {"virtual-router": vr}})
        code, text = rc(port, cert, "POST", f"/restconf/operations/{M}:clear-bindings", clear)
        assert code == 200 and json.loads(text) == {f"{M}:output": {"cleared": 1}}
        assert rc(port, cert, "GET", binding)[0] == 404
        name, content = notification(sse.event())
        (edit,) = content["datastore-changes"]["yang-patch"]["edit"]
        assert edit["operation"] == "delete" and edit["target"].endswith("/binding=192.0.2.10,198.51.100.9")
        sse.close()
        stats = json.dumps({f"{M}:input": {"virtual-router": vr}})
        assert rc(port, cert, "POST", f"/restconf/operations/{M}:clear-statistics", stats)[0] == 204
        counters = json.loads(rc(port, cert, "GET", f"{vr_path}/home-agent/statistics")[1])
        assert counters[f"{M}:statistics"]["requests-received"] == "0"  # counter64: a string in JSON
    finally:
        daemon.stop()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
