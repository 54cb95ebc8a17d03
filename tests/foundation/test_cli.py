"""The installed `mipha` console script and its offline `validate` command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def mipha() -> list[str]:
    exe = Path(sys.executable).parent / "mipha"
    assert exe.exists() or shutil.which("mipha"), "the console script `mipha` must be installed"
    return [str(exe if exe.exists() else shutil.which("mipha"))]


def test_validate_valid_and_invalid_documents() -> None:
    ok = subprocess.run(
        [*mipha(), "validate", "examples/startup.xml"], cwd=ROOT, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout
    bad = subprocess.run(
        [*mipha(), "validate", "--json", "examples/invalid/spi-reserved.xml", "examples/startup.xml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["examples/startup.xml"] == []
    (err,) = report["examples/invalid/spi-reserved.xml"]
    assert err["error-tag"] == "invalid-value" and err["error-app-tag"] == "spi-reserved"


def test_hostile_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "xxe.xml"
    f.write_bytes(b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/shadow">]><r>&x;</r>')
    res = subprocess.run([*mipha(), "validate", str(f)], capture_output=True, text=True)
    assert res.returncode == 2 and "DOCTYPE" in res.stderr


def test_validate_usage_names_the_command() -> None:
    """server/ knows no application: the usage line's name comes from mipha's command line."""
    res = subprocess.run([*mipha(), "validate", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("usage: mipha validate ")
