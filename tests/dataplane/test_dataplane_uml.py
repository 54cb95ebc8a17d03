"""The ipip backend on a real Debian kernel (this host's kernel has no ipip module).

The guest (User-Mode Linux, or QEMU/TCG where UML cannot run: ``kernel_guest.py``) runs the same scenario
as ``test_dataplane_tun.py`` (``dataplane_scenario.py``) and the same kill -9 / restart test as
``test_dataplane_restart.py`` with the kernel ``ipip`` backend, in one boot.  If no guest can boot the
test FAILS with the reason: CI runs it on this kind of machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from kernel_guest import GuestUnavailable, run_in_real_kernel

pytestmark = [pytest.mark.netns, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_ipip_backend_scenario_and_restart_in_real_kernel() -> None:
    if os.geteuid() != 0:
        pytest.fail("the ipip guest-kernel test needs root (CI runs as root)")
    python = sys.executable
    command = (
        f"{python} -c 'from ha.dataplane.factory import kernel_supports_ipip as k; "
        f'assert k(), "auto probe: no ipip"; print("auto probe: ipip available")\' && '
        f"{python} tests/dataplane/dataplane_scenario.py ipip && "
        f"{python} tests/dataplane/dataplane_restart.py ipip"
    )
    try:
        result = run_in_real_kernel(command, modules=["ipip", "ip_gre", "veth"], cwd=str(REPO), timeout=840)
    except GuestUnavailable as exc:
        pytest.fail(f"no guest kernel could run the ipip test: {exc}")
    print(result.note)
    print(result.output)
    assert result.returncode == 0, f"ipip scenario failed inside {result.runner}:\n{result.output}"
    assert "SCENARIO PASSED (ipip)" in result.output
    assert "auto probe: ipip available" in result.output
    assert "RESTART PASSED (ipip)" in result.output
