"""`mipha show ...` / `mipha clear ...` against a real daemon with real UDP registrations."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from daemon_harness import (
    KEY_HEX,
    KEY_YANG,
    MIPHA,
    NS,
    POOL,
    SA,
    Daemon,
    mn_command,
    router_config,
)
from free_ports import free_port
from lxml import etree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
NODES = 40


def configuration(vr: str, netns: str) -> str:
    nodes = "".join(
        f"<mobile-node><name>mn{i}</name><nai>mn{i}@example.com</nai><home-address>192.0.2.{10 + i}</home-address>"
        f"{SA}</mobile-node>"
        for i in range(NODES)
    )
    pool = POOL.replace("192.0.2.209", "192.0.2.210")
    roamer = f"<mobile-node><name>roamer</name><nai>roam@example.com</nai><address-pool>roam</address-pool>{SA}</mobile-node>"
    return router_config(vr, netns, pool + nodes + roamer)


def mn(netns: str, *args: str, key: str = KEY_HEX) -> subprocess.CompletedProcess:
    return subprocess.run(mn_command(netns, *args, key=key), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("show")
    tag = uuid.uuid4().hex[:6]
    vr, netns = f"sh{tag}", f"mipha-sh-{tag}"
    daemon = Daemon(tmp, free_port())
    try:
        daemon.start()
        with daemon.connect() as m:
            m.edit_config(target="running", config=configuration(vr, netns))
        out = mn(netns, "load", "--count", str(NODES), "--home-start", "192.0.2.10", "--coa", "198.51.100.9")
        assert out.returncode == 0, out.stdout + out.stderr
        out = mn(
            netns, "register", "--home", "0.0.0.0", "--nai", "roam@example.com", "--coa", "198.51.100.10"
        )
        assert out.returncode == 0, out.stdout + out.stderr
        bad = mn(netns, "register", "--home", "192.0.2.10", "--coa", "198.51.100.9", key="ff" * 16)
        assert bad.returncode != 0  # denied 131: a security violation
        client = tmp / "client.toml"
        client.write_text(
            f'host = "127.0.0.1"\nport = {daemon.port}\nuser = "admin"\npassword = "e2e-secret"\n'
            "host-key-check = false\n"
        )
        client.chmod(0o600)
        yield daemon, vr, client
    finally:
        daemon.stop()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)


def show(client: Path, *args: str, cmd: str = "show", env: dict | None = None) -> str:
    out = subprocess.run(
        [MIPHA, cmd, *args, "--client-config", str(client)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_show_bindings_table_filters_and_formats(setup):
    _daemon, vr, client = setup
    lines = show(client, "bindings").splitlines()
    head = lines[0]
    assert head.split()[:3] == ["VR", "HOME", "ADDRESS"] and "CARE-OF ADDRESS" in head
    assert len(lines) == 1 + NODES + 1
    col = head.index("CARE-OF ADDRESS")
    assert all(line[col : col + 12] == "198.51.100.9" or "198.51.100.10" in line for line in lines[1:])
    one = show(client, "bindings", "--vr", vr, "--home-address", "192.0.2.25").splitlines()
    assert len(one) == 2 and one[1].split()[:4] == [vr, "192.0.2.25", "198.51.100.9", "mn15"]
    assert one[1].split()[4] == "-"  # registered by home address: no NAI
    rows = json.loads(show(client, "bindings", "--nai", "mn7@example.com", "--json"))
    assert [(r["home-address"], r["mobile-node"]) for r in rows] == [("192.0.2.17", "mn7")]
    rows = json.loads(show(client, "bindings", "--nai", "roam@example.com", "--json"))
    assert (
        len(rows) == 1 and rows[0]["home-address"].startswith("192.0.2.2") and rows[0]["virtual-router"] == vr
    )
    rows = json.loads(show(client, "bindings", "--care-of-address", "198.51.100.10", "--json"))
    assert [r["mobile-node"] for r in rows] == ["roamer"]
    data = etree.fromstring(show(client, "bindings", "--home-address", "192.0.2.11", "--xml").encode())
    assert [e.text for e in data.iter(f"{{{NS}}}home-address")] == ["192.0.2.11"]
    summary = show(client, "bindings", "--summary").splitlines()
    assert summary[1].split() == [vr, str(NODES + 1), str(NODES + 1), "2"]
    # paging: each page aligned on its own; every row printed once
    paged = show(client, "bindings", "--page-size", "7").splitlines()
    assert len(paged) == 1 + NODES + 1


def test_show_statistics_violations_tunnels_pools_mobile_node(setup):
    _daemon, vr, client = setup
    stats = show(client, "statistics", "--vr", vr).splitlines()
    assert stats[0].split()[:3] == ["VR", "REQUESTS", "DEREGS"]
    row = dict(zip(["vr", "requests", "deregs", "accepted", "denied"], stats[1].split(), strict=False))
    assert int(row["accepted"]) >= NODES + 1 and int(row["denied"]) >= 1
    assert any("131" in line for line in stats[2:])  # denied-by-code table
    # which code answers: the C path (the suite builds it), and the load's renewals were answered in C
    head = stats.index(next(line for line in stats if line.startswith("VR") and "RECEIVE PATH" in line))
    assert stats[head + 1].split()[:2] == [vr, "c"] and "C path" in stats[head + 1]
    path = json.loads(show(client, "statistics", "--vr", vr, "--json"))[0]["receive-path"]
    assert path["path"] == "c" and path["reason"].startswith("C path")
    assert int(path["renewals-answered-in-c"]) > 0
    viol = json.loads(show(client, "violations", "--json"))
    assert viol and viol[0]["home-address"] == "192.0.2.10" and viol[0]["spi"] == "256"
    tunnels = json.loads(show(client, "tunnels", "--json"))
    assert {t["care-of-address"] for t in tunnels} == {"198.51.100.9", "198.51.100.10"}
    pools = show(client, "pools").splitlines()
    assert pools[1].split() == [vr, "roam", "11", "1", "10"]
    node = show(client, "mobile-node", "mn3")
    assert "mn3@example.com" in node and "192.0.2.13" in node and "198.51.100.9" in node
    assert KEY_YANG not in node  # show never prints keys, even to the superuser
    info = json.loads(show(client, "mobile-node", "mn3", "--json"))
    assert info["bindings"][0]["home-address"] == "192.0.2.13"
    bad = subprocess.run(
        [MIPHA, "show", "mobile-node", "nobody", "--client-config", str(client)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "no mobile node 'nobody'" in bad.stderr


def test_clear_and_connection_settings(setup, tmp_path):
    daemon, vr, client = setup
    out = show(client, "bindings", "--vr", vr, "--home-address", "192.0.2.30", cmd="clear")
    assert out.strip() == "1 binding(s) cleared"
    assert len(show(client, "bindings", "--home-address", "192.0.2.30").splitlines()) == 1  # header only
    show(client, "statistics", "--vr", vr, cmd="clear")
    row = show(client, "statistics", "--vr", vr, "--json")
    assert json.loads(row)[0]["requests-received"] == "0"
    # environment instead of the file (the file still gives what the environment does not)
    bare = tmp_path / "bare.toml"
    bare.write_text(f"port = {daemon.port}\nhost-key-check = false\n")
    out = show(bare, "pools", env={"MIPHA_USER": "admin", "MIPHA_PASSWORD": "e2e-secret"})
    assert "roam" in out
    bad = subprocess.run(
        [MIPHA, "show", "pools", "--client-config", str(bare), "--user", "admin", "--password", "wrong"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("MIPHA_")},
    )
    assert bad.returncode == 1 and "cannot open a NETCONF session" in bad.stderr
    bad = subprocess.run(
        [MIPHA, "show", "bindings", "--client-config", str(client), "--home-address", "not-an-ip"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "not an IPv4 address" in bad.stderr
