"""Virtual routers as Linux network namespaces: create, own, enter.

A virtual router (VR) is a network namespace; the VR named ``default`` is the daemon's own namespace.
mipha creates a missing namespace when a VR is configured and records that it did so with a marker file
under ``/run/mipha/netns-owned/``: only namespaces carrying that marker are ever deleted, so an operator's
pre-existing namespace is adopted and left in place.

A *stale* ``/run/netns/NAME`` is a file with no namespace mounted on it any more (its mount vanished,
e.g. the process that created it ran in a private mount namespace); entering it fails with EINVAL.
One mipha owns is recreated; one it does not own is refused with an error naming the file and the fix.

Python 3.11 has no ``os.setns``, and a namespace is a per-thread property, so code that must run inside a
namespace (opening the UDP 434 socket, a TUN device, a raw or netlink socket, writing per-netns sysctls)
runs on a dedicated thread that entered the namespace once: :class:`NetnsThread`.  Sockets stay bound to
the namespace they were created in, so the caller can use them from any thread afterwards.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from pyroute2 import netns as _pr2_netns

NETNS_RUN_DIR = Path("/run/netns")
OWNED_DIR = Path("/run/mipha/netns-owned")
DEFAULT_VR = "default"
CLONE_NEWNET = 0x40000000

T = TypeVar("T")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class NetnsError(OSError):
    """A namespace could not be created, entered or removed (an OS failure, like the syscall's)."""


def netns_for_vr(vr_name: str, configured: str | None = None) -> str | None:
    """The namespace of a VR: ``None`` for ``default`` (own namespace), else configured or ``mipha-<vr>``."""
    if configured:
        return configured
    if vr_name == DEFAULT_VR:
        return None
    return f"mipha-{vr_name}"


def _mounted(path: Path) -> bool:
    """True when a namespace is mounted on ``path`` (an nsfs file lives on another device than its
    directory; a stale file, its mount gone, on the same one)."""
    try:
        return path.stat().st_dev != path.parent.stat().st_dev
    except FileNotFoundError:
        return False


def netns_exists(name: str) -> bool:
    """True when namespace ``name`` exists and can be entered (a stale file does not count)."""
    return _mounted(NETNS_RUN_DIR / name)


def netns_is_stale(name: str) -> bool:
    """True when ``/run/netns/NAME`` exists but no namespace is mounted on it."""
    path = NETNS_RUN_DIR / name
    return path.exists() and not _mounted(path)


def stale_netns_error(name: str) -> NetnsError:
    """The refusal for a stale namespace file mipha does not own: what it is, and how to fix it."""
    path = NETNS_RUN_DIR / name
    return NetnsError(
        f"{path} is a stale network namespace file: no namespace is mounted on it (its creator may have "
        f"run in a private mount namespace), and mipha did not create it, so it leaves it alone. "
        f"Remove it ('ip netns delete {name}' or 'rm {path}') and commit again, or configure another "
        f"namespace for this virtual router"
    )


def is_owned(name: str) -> bool:
    """True when mipha created this namespace (marker present)."""
    return (OWNED_DIR / name).exists()


def ensure_netns(name: str) -> bool:
    """Create namespace ``name`` if missing (and mark it as mipha's); return True when created now.

    A stale file (see the module docstring) is replaced when mipha owns it, else refused (NetnsError).
    """
    path = NETNS_RUN_DIR / name
    if _mounted(path):
        return False
    if path.exists():
        if not is_owned(name):
            raise stale_netns_error(name)
        path.unlink()  # ours, its namespace gone: make a new one under the same name
    try:
        _pr2_netns.create(name)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise NetnsError(f"cannot create network namespace {name!r}: {exc}") from exc
        return False
    OWNED_DIR.mkdir(parents=True, exist_ok=True)
    (OWNED_DIR / name).write_text(f"{os.getpid()}\n")
    return True


def release_netns(name: str) -> bool:
    """Delete ``name`` only if mipha created it; return True when deleted."""
    if not is_owned(name):
        return False
    if netns_is_stale(name):
        (NETNS_RUN_DIR / name).unlink(missing_ok=True)
    elif netns_exists(name):
        try:
            _pr2_netns.remove(name)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise NetnsError(f"cannot remove network namespace {name!r}: {exc}") from exc
    (OWNED_DIR / name).unlink(missing_ok=True)
    return True


def _setns(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            if err == errno.EINVAL and not _mounted(path):
                raise stale_netns_error(path.name)
            raise NetnsError(f"setns({path}) failed: {os.strerror(err)}")
    finally:
        os.close(fd)


class NetnsThread:
    """One worker thread living inside a namespace (or the daemon's own one when ``name`` is None).

    Every call is serialised on that thread, which is also what the backends want for netlink batches.
    """

    def __init__(self, name: str | None) -> None:
        self.name = name
        self._entered = threading.Event()
        self._error: BaseException | None = None
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{name or 'self'}", initializer=self._enter
        )
        # Force the initializer to run now so a bad namespace fails at construction time.
        self._pool.submit(lambda: None).result()
        if self._error is not None:
            self._pool.shutdown(wait=False)
            raise NetnsError(str(self._error)) from self._error

    def _enter(self) -> None:
        try:
            if self.name is not None:
                _setns(NETNS_RUN_DIR / self.name)
        except BaseException as exc:
            self._error = exc
        finally:
            self._entered.set()

    def submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        return self._pool.submit(fn, *args)

    def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` inside the namespace and return its result (blocking)."""
        return self._pool.submit(fn, *args).result()

    def socket(self, family: int, type_: int, proto: int = 0) -> socket.socket:
        """A socket created inside the namespace (the engine's UDP 434 transport uses this)."""
        return self.call(socket.socket, family, type_, proto)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> NetnsThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_in_netns(name: str | None, fn: Callable[..., T], *args: object) -> T:
    """One-off helper: run ``fn(*args)`` inside namespace ``name``."""
    with NetnsThread(name) as t:
        return t.call(fn, *args)


def write_sysctl(parts: tuple[str, ...], value: str | int) -> None:
    """Write ``/proc/sys/<parts>`` (parts, not a dotted key: interface names may contain dots).

    Per-namespace keys (``net/...``) resolve in the calling thread's namespace: call it on a
    :class:`NetnsThread`.
    """
    Path("/proc/sys", *parts).write_text(f"{value}\n")


def read_sysctl(parts: tuple[str, ...]) -> str:
    return Path("/proc/sys", *parts).read_text().strip()
