"""Configuration of the NETCONF server (filled from the daemon's bootstrap TOML or by tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from server.auth import User

REPO_YANG = Path(__file__).resolve().parent.parent / "yang"


@dataclass
class ServerConfig:
    """Listen address, users, host key, state directory and limits."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 830
    users: list[User] = field(default_factory=list)
    host_key_path: Path | None = None  # default: <state_dir>/ssh_host_ed25519_key, generated on first start
    max_message_size: int = 64 * 1024 * 1024
    superuser_group: str = "admin"
    auth_fail_delay: float = 1.0  # seconds added to every failed password attempt
    login_timeout: float = 30.0
    event_log_size: int = 1000
    max_sessions: int = 64  # further `netconf` channels are refused (resource exhaustion)
    yang_dir: Path = REPO_YANG
    extra_modules: tuple[str, ...] = (
        "ietf-netconf",
        "ietf-netconf-monitoring",
        "ietf-netconf-with-defaults",
        "ietf-netconf-notifications",
        "ietf-netconf-nmda",
        "ietf-netconf-acm",
        "ietf-subscribed-notifications",
        "ietf-yang-push",
        "ietf-subscribed-notif-receivers",
    )
    #: the features the server implements, per module (the others stay disabled, not advertised)
    features: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "ietf-subscribed-notifications": (
                "configured",
                "encode-json",
                "encode-xml",
                "replay",
                "subtree",
                "xpath",
            ),
            "ietf-yang-push": ("on-change",),
        }
    )

    @property
    def host_key(self) -> Path:
        return self.host_key_path or (self.state_dir / "ssh_host_ed25519_key")
