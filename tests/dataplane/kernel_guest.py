"""Run a command on a real Debian kernel with ipip: User-Mode Linux where it works, else QEMU (TCG).

UML boots in ~2 s but cannot start a process on CPUs with AMX (see ``uml_harness``); there the same
command runs in ``vm_harness`` (Debian's ``linux-image-amd64`` under ``qemu-system-x86_64``, ~4 s boot,
Python several times slower).  ``MIPHA_GUEST=vm`` or ``=uml`` forces one runner.  Any other failure is
an error for the caller: CI runs these tests on this kind of machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from uml_harness import UmlHostUnsupported, UmlUnavailable, run_in_uml
from vm_harness import VmUnavailable, run_in_vm


class GuestUnavailable(RuntimeError):
    """Neither runner could run the command; the message says why."""


@dataclass(frozen=True)
class GuestResult:
    runner: str  # "uml" or "qemu-tcg"
    returncode: int
    output: str
    note: str  # why this runner, and for QEMU the boot / total seconds


def run_in_real_kernel(command: str, *, modules: list[str], cwd: str, timeout: float) -> GuestResult:
    """Run ``command`` as root in a guest kernel that has ``modules``; see the module docstring."""
    forced = os.environ.get("MIPHA_GUEST", "")
    why = "MIPHA_GUEST=vm"
    if forced != "vm":
        try:
            uml = run_in_uml(command, modules=modules, cwd=cwd, env={}, timeout=timeout)
            return GuestResult("uml", uml.returncode, uml.output, "User-Mode Linux")
        except UmlHostUnsupported as exc:
            if forced == "uml":
                raise GuestUnavailable(str(exc)) from exc
            why = str(exc)
        except UmlUnavailable as exc:
            raise GuestUnavailable(f"User-Mode Linux: {exc}") from exc
    try:
        vm = run_in_vm(command, modules=modules, cwd=cwd, env={}, timeout=timeout)
    except VmUnavailable as exc:
        raise GuestUnavailable(f"QEMU (TCG), used because {why}: {exc}") from exc
    note = f"QEMU TCG ({why}): boot {vm.boot_seconds:.1f} s, total {vm.total_seconds:.1f} s"
    return GuestResult("qemu-tcg", vm.returncode, vm.output, note)
