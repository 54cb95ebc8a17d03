"""``create_backend(kind, vr)``: pick and build a data plane backend (``auto`` probes the kernel)."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Literal

from ha.netns import ensure_netns, release_netns, run_in_netns

from .base import DataPlane, DataPlaneError, VirtualRouterPlane

log = logging.getLogger(__name__)

BackendKind = Literal["auto", "ipip", "tun", "none"]
_probe_cache: bool | None = None


def kernel_supports_ipip() -> bool:
    """True when this kernel can make ``ipip`` devices (probed once, in a scratch namespace)."""
    global _probe_cache
    if _probe_cache is None:
        from .ipip import kernel_has_ipip

        scratch = f"mipha-probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        ensure_netns(scratch)
        try:
            _probe_cache = run_in_netns(scratch, kernel_has_ipip)
        finally:
            release_netns(scratch)
    return _probe_cache


def create_backend(kind: BackendKind | str, vr: VirtualRouterPlane) -> DataPlane:
    """``auto``: ``ipip`` where the kernel has it, else ``tun``; ``none`` only when asked."""
    if kind == "auto":
        kind = "ipip" if kernel_supports_ipip() else "tun"
        log.info("VR %s: data plane backend auto -> %s", vr.name, kind)
    if kind == "ipip":
        from .ipip import IpipPlane

        return IpipPlane(vr)
    if kind == "tun":
        from .tun import TunPlane

        return TunPlane(vr)
    if kind == "none":
        from .none import NonePlane

        return NonePlane(vr)
    raise DataPlaneError(f"unknown data plane backend {kind!r} (auto, ipip, tun, none)")
