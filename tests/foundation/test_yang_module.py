"""The YANG module itself: lint-clean in two independent tools, loadable, and its tree doc current."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import libyang

from server import yang

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "yang" / "mipha-home-agent.yang"
PYANG = [sys.executable, "-m", "pyang"]


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_pyang_strict_lint_has_zero_findings() -> None:
    result = run([*PYANG, "--strict", "--lint", "-p", "yang/ietf", str(MODULE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_yanglint_has_zero_findings() -> None:
    yanglint = shutil.which("yanglint")
    assert yanglint, "yanglint (Debian libyang2-tools) must be installed by the Makefile"
    result = run([yanglint, "-i", "-p", "yang/ietf", str(MODULE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_tree_doc_is_current() -> None:
    result = run([*PYANG, "-f", "tree", "-p", "yang/ietf", str(MODULE)])
    assert result.returncode == 0, result.stderr
    committed = (ROOT / "docs" / "yang-tree.txt").read_text()
    assert result.stdout == committed, "docs/yang-tree.txt is stale: run `make tree` and commit it"


def test_module_loads_in_libyang_with_contract_names() -> None:
    ctx = yang.new_context()
    module = ctx.get_module("mipha-home-agent")
    assert module.prefix() == "mipha"
    assert module.implemented()
    names = {
        "/mipha-home-agent:virtual-routers/virtual-router/home-agent/bindings/binding",
        "/mipha-home-agent:virtual-routers/virtual-router/home-agent/statistics/denied-by-code/code",
        "/mipha-home-agent:virtual-routers/virtual-router/address-pool/range",
        "/mipha-home-agent:virtual-routers/virtual-router/mobile-node/security-association/key",
        "/mipha-home-agent:virtual-routers/virtual-router/foreign-agent/security-association/spi",
        "/mipha-home-agent:virtual-routers/virtual-router/home-agent/security-violations/violation",
    }
    for path in names:
        assert list(ctx.find_path(path)), path
    kinds = (libyang.SNode.RPC, libyang.SNode.NOTIF)
    tops = {(node.keyword(), node.name()) for node in module.children(types=kinds)}
    assert tops == {
        ("rpc", "clear-bindings"),
        ("rpc", "clear-statistics"),
        ("rpc", "trace-registrations"),
        ("notification", "binding-created"),
        ("notification", "binding-removed"),
        ("notification", "registration-denied"),
    }


def test_key_is_default_deny_all() -> None:
    from server.validation import Validator

    # mipha's own: other modules in the shared context (ietf-netconf-acm once a server ran in this
    # process) have default-deny-all nodes of their own
    mipha = {p for p in Validator().protected_paths if p.startswith("/virtual-routers/")}
    assert mipha == {
        "/virtual-routers/virtual-router/mobile-node/security-association/key",
        "/virtual-routers/virtual-router/foreign-agent/security-association/key",
        "/virtual-routers/virtual-router/aaa/server/secret",
        "/virtual-routers/virtual-router/aaa/lookup-password",
    }
