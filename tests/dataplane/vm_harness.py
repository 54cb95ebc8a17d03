"""Run a command inside a real Debian kernel under QEMU (TCG): the ipip path where UML cannot run.

User-Mode Linux 6.1 dies on CPUs whose XSAVE area (AMX) is larger than its FP buffer, and ``/dev/kvm``
on these machines is not usable by a stock kernel, so this boots Debian's ``linux-image-amd64`` in
``qemu-system-x86_64`` with software emulation (TCG).  The host ``/`` is shared read-only over 9p
(virtio), a temporary host directory writable for results; a tiny initramfs written here (busybox +
the virtio/9p modules, no initramfs tool involved) mounts them, chroots into the host root and runs the
command with the checkout's own ``.venv`` python.  Modules the test asks for are loaded by ``modprobe``
from the host's ``/lib/modules/<guest kernel>`` (installed by the same package).

Python runs several times slower under TCG than on the host: keep guest scenarios small.
"""

from __future__ import annotations

import gzip
import io
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
BOOT = Path("/boot")
MODULES = Path("/lib/modules")
# virtio PCI transport + 9p over virtio, what the initramfs needs to mount the host root.
INITRAMFS_MODULES = ["virtio_pci", "9pnet_virtio", "9p"]


class VmUnavailable(RuntimeError):
    """QEMU could not boot or did not report a result; the message says why."""


@dataclass(frozen=True)
class VmResult:
    returncode: int
    output: str
    console: str
    boot_seconds: float
    total_seconds: float


def guest_kernel() -> tuple[Path, Path]:
    """The newest ``/boot/vmlinuz-*`` whose module tree has 9p (Debian's generic flavour)."""
    found = []
    for image in BOOT.glob("vmlinuz-*"):
        release = image.name.removeprefix("vmlinuz-")
        tree = MODULES / release
        if (tree / "modules.dep").exists() and list(tree.glob("kernel/fs/9p/9p.ko*")):
            found.append((release, image, tree))
    if not found:
        raise VmUnavailable(
            "no Debian kernel with 9p modules under /boot: install the Debian package linux-image-amd64"
        )
    _, image, tree = sorted(found)[-1]
    if not os.access(image, os.R_OK):
        raise VmUnavailable(f"{image} is not readable")
    return image, tree


def module_order(tree: Path, names: list[str]) -> list[Path]:
    """The ``.ko`` files for ``names`` and their dependencies, dependencies first (``modules.dep``)."""
    deps: dict[str, list[str]] = {}
    for line in (tree / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.split(".ko")[0].replace("-", "_"): m for m in deps}
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for dep in reversed(deps.get(mod, [])):
            visit(dep)
        order.append(mod)

    for name in names:
        if name not in by_name:
            raise VmUnavailable(f"module {name} not in {tree}/modules.dep")
        visit(by_name[name])
    return [tree / m for m in order]


class _Cpio:
    """A newc cpio archive (the format the kernel unpacks as initramfs), built in memory."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.buf.write(name.encode() + b"\0")
        self._pad()
        self.buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return self.buf.getvalue()


def build_initramfs(tree: Path, busybox: str) -> bytes:
    """busybox, the 9p modules and ``/init``: mount the shares, chroot into the host root."""
    mods = module_order(tree, INITRAMFS_MODULES)
    insmods = "\n".join(f"/bin/busybox insmod /mod/{p.name}" for p in mods)
    init = f"""#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
{insmods}
opts=trans=virtio,version=9p2000.L,msize=262144
/bin/busybox mount -t 9p -o $opts,ro,cache=loose hostroot /root || echo "mipha-vm: cannot mount host root"
/bin/busybox mount -t proc proc /root/proc
/bin/busybox mount -t sysfs sys /root/sys
/bin/busybox mount -t devtmpfs dev /root/dev
/bin/busybox mount -t tmpfs tmpfs /root/tmp
/bin/busybox mount -t tmpfs tmpfs /root/run
/bin/busybox mkdir -p /root/tmp/out
/bin/busybox mount -t 9p -o $opts out /root/tmp/out || echo "mipha-vm: cannot mount result share"
exec /bin/busybox chroot /root /bin/sh /tmp/out/stage2.sh
"""
    cpio = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "root", "mod"):
        cpio.add(d, 0o040755)
    cpio.add("dev/console", 0o020600, rdev=(5, 1))
    cpio.add("bin/busybox", 0o100755, Path(busybox).read_bytes())
    for p in mods:
        cpio.add(f"mod/{p.name}", 0o100644, p.read_bytes())
    cpio.add("init", 0o100755, init.encode())
    return gzip.compress(cpio.finish(), compresslevel=1)


def stage2_script(command: str, modules: list[str], cwd: str, env: dict[str, str], hidden: list[str]) -> str:
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
    # The guest mounts tmpfs on /tmp and /run: a checkout living there (CI clones anywhere) would vanish,
    # so its own share (tag hidden<i>) is mounted back at the same path.
    remounts = "\n".join(
        f"mkdir -p {shlex.quote(d)} && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro,"
        f"cache=loose hidden{i} {shlex.quote(d)}"
        for i, d in enumerate(hidden)
    )
    return f"""export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /run/netns
{remounts}
modprobe -a {" ".join(shlex.quote(m) for m in modules)} > /tmp/out/modules.log 2>&1
ip link set lo up
export HOME=/tmp PYTHONDONTWRITEBYTECODE=1 CI=true
{exports}
cd {shlex.quote(cwd)}
cat /proc/uptime > /tmp/out/uptime
( {command} ) > /tmp/out/output 2>&1 < /dev/null
echo $? > /tmp/out/rc
sync
busybox poweroff -f
"""


def run_in_vm(
    command: str,
    *,
    modules: list[str],
    cwd: str,
    env: dict[str, str],
    timeout: float = 400,
    mem: str = "1024M",
    cpus: int = 2,
) -> VmResult:
    """Boot the Debian kernel in QEMU/TCG, run ``command`` as root inside it, return status and output."""
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise VmUnavailable(f"{QEMU} not found: install the Debian package qemu-system-x86")
    busybox = shutil.which("busybox")
    if busybox is None:
        raise VmUnavailable("busybox not found: install the Debian package busybox-static")
    image, tree = guest_kernel()
    cwd = os.path.realpath(cwd)
    work = Path(tempfile.mkdtemp(prefix="mipha-vm-"))
    try:
        out = work / "out"
        out.mkdir()
        hidden = [d for d in {cwd} if d.startswith(("/tmp/", "/run/"))]
        (out / "stage2.sh").write_text(stage2_script(command, modules, cwd, env, hidden))
        initrd = work / "initrd.gz"
        initrd.write_bytes(build_initramfs(tree, busybox))
        argv = [
            qemu,
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-display",
            "none",
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            os.environ.get("MIPHA_VM_CPU", "max"),
            "-smp",
            str(cpus),
            "-m",
            mem,
            "-kernel",
            str(image),
            "-initrd",
            str(initrd),
            "-append",
            "console=ttyS0 quiet panic=-1 rdinit=/init",
            "-serial",
            "stdio",
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs",
            f"local,path={out},mount_tag=out,security_model=none,multidevs=remap",
        ]
        for i, d in enumerate(hidden):
            argv += ["-virtfs", f"local,path={d},mount_tag=hidden{i},security_model=none,readonly=on"]
        start = time.monotonic()
        try:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            output = (out / "output").read_text() if (out / "output").exists() else ""
            raise VmUnavailable(
                f"QEMU did not finish within {timeout}s; guest output so far:\n{output}"
            ) from exc
        total = time.monotonic() - start
        console = proc.stdout + proc.stderr
        rc_file = out / "rc"
        if not rc_file.exists():
            raise VmUnavailable(
                f"QEMU exited ({proc.returncode}) without running the test; console:\n{console[-4000:]}"
            )
        uptime = (out / "uptime").read_text().split()
        modules_log = (out / "modules.log").read_text().strip()
        output = (out / "output").read_text()
        if modules_log:
            output = f"[module loading]\n{modules_log}\n{output}"
        rc = int(rc_file.read_text().strip() or 255)
        return VmResult(rc, output, console, float(uptime[0]) if uptime else 0.0, total)
    finally:
        shutil.rmtree(work, ignore_errors=True)
