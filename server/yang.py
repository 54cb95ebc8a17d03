"""Where the YANG modules live and how one libyang context is built from them.

Every component that needs the schema (validation, with-defaults, get-schema, yang-library) shares
one libyang context per process: loading and compiling the modules costs tens of milliseconds, and
libyang contexts are not cheap in memory.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import libyang

#: The repository's (or installed tree's) ``yang/`` directory: the application's modules, with the
#: IETF ones in ``yang/ietf/``.
YANG_DIR = Path(__file__).resolve().parent.parent / "yang"


def application_modules(yang_dir: Path = YANG_DIR) -> tuple[str, ...]:
    """The modules an application ships at the top of its YANG directory (``<name>.yang`` or
    ``<name>@<revision>.yang``): the server implements exactly these, knowing none by name."""
    return tuple(sorted({p.name.split("@")[0].removesuffix(".yang") for p in yang_dir.glob("*.yang")}))


#: The modules of the default YANG directory, loaded into every context (imports come along).
IMPLEMENTED_MODULES: tuple[str, ...] = application_modules()

_lock = threading.Lock()
_shared: dict[tuple[Path, tuple[str, ...]], libyang.Context] = {}


def _silence_libyang_logging() -> None:
    """libyang logs every validation error, values included (keys!): keep its messages out of logs.

    The messages are still collected from the context's error list, where the validation layer
    reads them and redacts protected values before anything leaves the process.
    """
    libyang.configure_logging(True, logging.ERROR)  # also makes libyang compute error paths
    logger = logging.getLogger("libyang")
    logger.disabled = True
    logger.propagate = False


def search_path(yang_dir: Path = YANG_DIR) -> str:
    """libyang search path: our modules, then the IETF modules we ship."""
    return f"{yang_dir}:{yang_dir / 'ietf'}"


def new_context(yang_dir: Path = YANG_DIR, modules: tuple[str, ...] = IMPLEMENTED_MODULES) -> libyang.Context:
    """A fresh libyang context with ``modules`` loaded and implemented."""
    _silence_libyang_logging()
    ctx = libyang.Context(search_path(yang_dir))
    for name in modules:
        ctx.load_module(name)
    return ctx


def shared_context(
    yang_dir: Path = YANG_DIR, modules: tuple[str, ...] = IMPLEMENTED_MODULES
) -> libyang.Context:
    """The process-wide context for ``(yang_dir, modules)``, built once."""
    key = (Path(yang_dir), tuple(modules))
    with _lock:
        ctx = _shared.get(key)
        if ctx is None:
            ctx = _shared[key] = new_context(*key)
        return ctx


def enable_features(ctx: libyang.Context, module: str, features: tuple[str, ...]) -> None:
    """Enable exactly `features` of an implemented module (libyang-python's feature_enable sets
    one feature and disables the others)."""
    from _libyang import ffi, lib

    mod = ctx.get_module(module)
    names = [ffi.new("char[]", f.encode()) for f in features]
    array = ffi.new("char *[]", [*names, ffi.NULL])
    if lib.lys_set_implemented(mod.cdata, array) != lib.LY_SUCCESS:
        raise ctx.error(f"cannot enable features {features} of {module}")
