"""Run a command inside User-Mode Linux (Debian ``user-mode-linux``): a real Debian kernel with ipip.

This machine's kernel has no ipip module, so the ``ipip`` backend is tested in UML.  The guest boots with
the host's ``/`` as a read-only hostfs root; an init script mounts proc/sys/tmpfs, loads the modules the
test needs with busybox ``insmod`` (in ``modules.dep`` order: the guest has no ``/lib/modules``), mounts a
host directory writable for results, runs the command and powers off.  The environment is not passed
through, so the script sets it.  Recipe: ``docs/platform-notes.md``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

UML_KERNEL = "linux.uml"
UML_MODULES = Path("/usr/lib/uml/modules")


class UmlHostUnsupported(RuntimeError):
    """UML 6.1 cannot start a process on this host CPU: its FP-register buffer is smaller than the
    host's XSAVE area (CPUs with AMX tiles), so ptrace(SETFPREGS) fails with EFAULT and init dies."""


class UmlUnavailable(RuntimeError):
    """UML could not boot or did not report a result; the message says why."""


@dataclass(frozen=True)
class UmlResult:
    returncode: int
    output: str
    console: str


def module_paths(names: list[str]) -> list[Path]:
    """The ``.ko`` files for ``names`` plus their dependencies, dependencies first."""
    versions = sorted(p for p in UML_MODULES.iterdir() if (p / "modules.dep").exists())
    if not versions:
        raise UmlUnavailable(f"no UML module tree under {UML_MODULES} (is user-mode-linux installed?)")
    root = versions[-1]
    deps: dict[str, list[str]] = {}
    for line in (root / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.removesuffix(".ko"): m for m in deps}
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for dep in reversed(deps.get(mod, [])):
            visit(dep)
        order.append(mod)

    for name in names:
        if name not in by_name:
            raise UmlUnavailable(f"module {name} not in {root}/modules.dep")
        visit(by_name[name])
    return [root / m for m in order]


def run_in_uml(
    command: str,
    *,
    modules: list[str],
    cwd: str,
    env: dict[str, str],
    timeout: float = 240,
    mem: str = "768M",
) -> UmlResult:
    """Boot UML, run ``command`` (a shell command line) as root inside it, return its status and output."""
    kernel = shutil.which(UML_KERNEL)
    if kernel is None:
        raise UmlUnavailable(f"{UML_KERNEL} not found: install the Debian package user-mode-linux")
    busybox = shutil.which("busybox")
    if busybox is None:
        raise UmlUnavailable("busybox not found: install the Debian package busybox-static")
    work = Path(tempfile.mkdtemp(prefix="mipha-uml-"))
    try:
        out = work / "out"
        out.mkdir()
        exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
        inserts = "\n".join(
            f"{busybox} insmod {shlex.quote(str(p))} || echo 'insmod {p.name} failed'"
            for p in module_paths(modules)
        )
        # The guest mounts tmpfs on /tmp and /run: a checkout living there (CI clones anywhere) would
        # vanish, so map it back from the host.
        hidden = [d for d in {os.path.realpath(cwd)} if d.startswith(("/tmp/", "/run/"))]
        remounts = "\n".join(
            f"mkdir -p {shlex.quote(d)} && mount -t hostfs none {shlex.quote(d)} -o {shlex.quote(d)}"
            for d in hidden
        )
        script = work / "init.sh"
        script.write_text(
            f"""#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /tmp/out /run/netns
mount -t hostfs none /tmp/out -o {out}
{remounts}
{{
{inserts}
}} > /tmp/out/modules.log 2>&1
ip link set lo up
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp PYTHONDONTWRITEBYTECODE=1 CI=true
{exports}
cd {shlex.quote(cwd)}
( {command} ) > /tmp/out/output 2>&1 < /dev/null
echo $? > /tmp/out/rc
sync
{busybox} poweroff -f
"""
        )
        script.chmod(0o755)
        argv = [
            kernel,
            f"mem={mem}",
            "rootfstype=hostfs",
            "rootflags=/",
            "ro",
            f"init={script}",
            "con=null",
            "con0=fd:0,fd:1",
            "quiet",
        ]
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=work,
                check=False,
            )
            console = proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            output = (out / "output").read_text() if (out / "output").exists() else ""
            raise UmlUnavailable(
                f"UML did not finish within {timeout}s; guest output so far:\n{output}"
            ) from exc
        rc_file = out / "rc"
        if not rc_file.exists() and "ptrace set fp regs failed" in console:
            raise UmlHostUnsupported(
                "User-Mode Linux 6.1 cannot run processes on this CPU (ptrace set fp regs failed: the "
                "host's XSAVE area, AMX included, is larger than UML's FP buffer)"
            )
        if not rc_file.exists():
            raise UmlUnavailable(
                f"UML exited ({proc.returncode}) without running the test; console:\n{console[-4000:]}"
            )
        modules_log = (out / "modules.log").read_text().strip()
        output = (out / "output").read_text()
        if modules_log:
            output = f"[module loading]\n{modules_log}\n{output}"
        return UmlResult(int(rc_file.read_text().strip() or 255), output, console)
    finally:
        shutil.rmtree(work, ignore_errors=True)
