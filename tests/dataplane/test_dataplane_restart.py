"""kill -9 / restart with the tun backend on this kernel: zero stale objects, foreign ones untouched.

The ipip variant of the same test runs inside UML (``test_dataplane_uml.py``).
"""

from __future__ import annotations

import os

import pytest
from dataplane_restart import run_restart

pytestmark = pytest.mark.netns


def test_tun_restart_after_sigkill_reconciles() -> None:
    if os.geteuid() != 0:
        pytest.fail("namespace tests need root (CI runs as root)")
    steps: list[str] = []
    run_restart("tun", log=steps.append)
    assert steps[0].startswith("tun: killed -9 with 40 proxies")
    assert steps[-1] == "tun: zero stale objects, foreign objects untouched"
