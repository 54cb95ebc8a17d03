"""The Prometheus endpoint of a real daemon: scraped with curl, checked by promtool."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from daemon_harness import POOL, SA, Daemon, mn_command, router_config
from free_ports import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def scrape(port: int) -> str:
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{port}/metrics"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def value(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            return float(m.group(2))
    raise AssertionError(f"no {name}{{{want}}} in:\n{text}")


def test_metrics_endpoint_counts_and_promtool(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    vr, netns = f"mt{tag}", f"mipha-mt-{tag}"
    metrics_port = free_port()
    daemon = Daemon(tmp_path, free_port(), f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
    try:
        daemon.start()
        assert value(scrape(metrics_port), "mipha_netconf_sessions") == 0
        with daemon.connect() as m:
            m.edit_config(
                target="running",
                config=router_config(
                    vr,
                    netns,
                    POOL
                    + f"<mobile-node><name>a</name><home-address>192.0.2.10</home-address>{SA}</mobile-node>"
                    + f"<mobile-node><name>b</name><nai>b@example.com</nai><address-pool>roam</address-pool>{SA}</mobile-node>",
                ),
            )
            text = scrape(metrics_port)
            assert value(text, "mipha_netconf_sessions") == 1
        for args in (
            ("register", "--home", "192.0.2.10", "--coa", "198.51.100.9"),
            ("register", "--home", "0.0.0.0", "--nai", "b@example.com", "--coa", "198.51.100.10"),
        ):
            # a first retransmission only after 5 s: a reply late on a loaded box must not make the
            # node send a new request (the counts below are exact)
            out = subprocess.run(
                mn_command(netns, "--timeout", "5", *args), capture_output=True, text=True, timeout=60
            )
            assert out.returncode == 0, out.stdout + out.stderr
        bad = mn_command(
            netns,
            "--retries",
            "0",
            "register",
            "--home",
            "192.0.2.10",
            "--coa",
            "198.51.100.9",
            key="ff" * 16,
        )
        subprocess.run(bad, capture_output=True, text=True, timeout=60)
        text = scrape(metrics_port)
        assert value(text, "mipha_registration_requests_total", virtual_router=vr) == 3
        assert value(text, "mipha_registrations_accepted_total", virtual_router=vr) == 2
        assert value(text, "mipha_registrations_denied_by_code_total", virtual_router=vr, code="131") == 1
        assert value(text, "mipha_authentication_failures_total", virtual_router=vr, peer="mobile-node") == 1
        assert value(text, "mipha_security_violations_total", virtual_router=vr) == 1
        assert value(text, "mipha_bindings", virtual_router=vr) == 2
        assert value(text, "mipha_tunnels", virtual_router=vr) == 2
        assert value(text, "mipha_pool_size", virtual_router=vr, pool="roam") == 10
        assert value(text, "mipha_pool_in_use", virtual_router=vr, pool="roam") == 1
        assert value(text, "mipha_dataplane_failures_total", virtual_router=vr) == 0
        assert value(text, "mipha_internal_errors_total", virtual_router=vr) == 0
        assert value(text, "mipha_commit_apply_seconds_count") >= 1
        assert value(text, "mipha_journal_sync_seconds_count") >= 1
        assert value(text, "mipha_netconf_sessions_started_total") >= 1
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        # OpenMetrics when asked for it
        om = subprocess.run(
            ["curl", "-sS", "-H", "Accept: application/openmetrics-text; version=1.0.0",
             f"http://127.0.0.1:{metrics_port}/metrics"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert om.stdout.rstrip().endswith("# EOF")
    finally:
        daemon.stop()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
    refused = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{metrics_port}/metrics"], capture_output=True)
    assert refused.returncode != 0  # the endpoint closed with the daemon
