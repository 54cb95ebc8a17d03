"""The whole product end to end with the kernel ``ipip`` backend, on a real Debian kernel.

This host's kernel has no ipip module, so ``e2e_uml_scenario.py`` (the flow of ``test_e2e_tun.py``,
smaller) runs as root on a Debian kernel booted by ``tests/dataplane/kernel_guest.py``: User-Mode Linux,
or QEMU/TCG where UML cannot run.  If no guest can boot the test FAILS with the reason: CI runs it as root
on this kind of machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "dataplane"))

from kernel_guest import GuestUnavailable, run_in_real_kernel  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# Each marker is printed by the scenario after the step it names has been checked.
STEPS = (
    "daemon started with --dataplane ipip",
    "configured over NETCONF; nothing intercepted before registration",
    "registered: binding in <get>, mip-c000020a up, /32 route in table 434, proxy ARP",
    "ping through the ipip tunnel and back through the reverse tunnel; counters in <get>",
    "clear-bindings: binding, device, route and proxy entry gone",
    "registered again, daemon killed with SIGKILL, tunnel device deleted",
    "restarted: binding, device, route and traffic are back",
    "SIGTERM: daemon stopped, no mipha object left in the kernel",
    "E2E UML PASSED (ipip)",
)


@pytest.mark.timeout(900)
def test_daemon_end_to_end_with_ipip_backend_in_real_kernel() -> None:
    if os.geteuid() != 0:
        pytest.fail("the guest-kernel end-to-end test needs root (CI runs as root)")
    command = f"{sys.executable} tests/daemon/e2e_uml_scenario.py"
    try:
        result = run_in_real_kernel(command, modules=["ipip", "veth"], cwd=str(ROOT), timeout=840)
    except GuestUnavailable as exc:
        pytest.fail(f"no guest kernel could run the end-to-end ipip test: {exc}")
    print(result.note)
    print(result.output)
    assert result.returncode == 0, f"end-to-end ipip flow failed inside {result.runner}:\n{result.output}"
    missing = [step for step in STEPS if step not in result.output]
    assert not missing, f"steps not reported by the scenario: {missing}\n{result.output}"
