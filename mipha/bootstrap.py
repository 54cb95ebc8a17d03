"""The daemon's bootstrap file (TOML): what must be known before NETCONF can configure anything.

Everything else — virtual routers, home agents, mobile nodes — is YANG configuration, edited over
NETCONF and persisted by the server.  The file is strict: an unknown key is an error, so a typo never
silently falls back to a default.  Relative paths are relative to the file's directory.

```toml
[netconf]
listen = "127.0.0.1:830"
host-key = "ssh_host_ed25519_key"   # relative to the state directory; generated on first start
max-message-size = 67108864
superuser-group = "admin"           # may read and write nacm:default-deny-all nodes (keys)

[[user]]
name = "admin"
password-hash = "scrypt$14$8$1$..."   # `mipha hash-password`
authorized-keys = ["ssh-ed25519 AAAA... alice@example"]
groups = ["admin"]

[state]
dir = ".mipha-state"                # datastores, host key, binding journal
startup = "startup.xml"             # loaded on the first start only (empty state directory)

[dataplane]
backend = "auto"                    # auto | ipip | tun | none

[log]
level = "info"
syslog = false                      # true: also RFC 5424 to the local syslog socket
syslog-socket = "/dev/log"

[metrics]
listen = "127.0.0.1:9434"           # Prometheus endpoint /metrics; absent: off

[restconf]                          # optional: RESTCONF over HTTPS (docs/restconf.md); absent: off
listen = "127.0.0.1:8443"
certificate = "restconf-cert.pem"   # relative to the state directory; self-signed, generated on first start
private-key = "restconf-key.pem"
client-ca = "clients-ca.pem"        # optional, relative to this file: its client certs log in as their CN

[redundancy]                        # optional: hot standby on etcd (docs/redundancy.md)
etcd = ["http://127.0.0.1:2379"]    # https://HOST:PORT (all of them): TLS, with the tls-* keys below
group = "pair"
node = "a"
lease-ttl = 2
warm-kernel = true                  # the standby keeps tunnels and routes programmed
leader-route = true                 # replication transactions go to etcd's Raft leader (false: any member)
# tls-ca = "etcd-ca.pem"            # https only; files relative to this file; absent: the system's roots
# tls-certificate = "etcd-client.pem"   # client certificate for etcd --client-cert-auth, with its key:
# tls-private-key = "etcd-client.key"
# tls-server-name = "etcd.example"  # the name every member's certificate carries (default: first host)
```
"""

from __future__ import annotations

import builtins
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.auth import User, verify_password

BACKENDS = ("auto", "ipip", "tun", "none")
LOG_LEVELS = ("debug", "info", "warning", "error")
LAB_CREDENTIALS = (("admin", "admin"),)


class BootstrapError(ValueError):
    """The bootstrap file is missing, malformed or inconsistent; the message says where."""


@dataclass
class Bootstrap:
    """The parsed bootstrap file, with command-line overrides applied by the caller."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 830
    host_key: Path | None = None
    max_message_size: int = 64 * 1024 * 1024
    superuser_group: str = "admin"
    users: list[User] = field(default_factory=list)
    state_dir: Path = Path(".mipha-state")
    startup: Path | None = None
    dataplane: str = "auto"
    log_level: str = "info"
    log_syslog: bool = False  # [log] syslog: RFC 5424 to the local socket, beside stderr
    syslog_socket: str = "/dev/log"
    metrics_listen: tuple[str, int] | None = None  # [metrics] listen; None: no endpoint
    redundancy: Any = None  # mipha.redundancy.RedundancyConfig when [redundancy] is present
    restconf_listen: tuple[str, int] | None = None  # [restconf] listen; None: no RESTCONF
    restconf_cert: Path | None = None  # None: <state dir>/restconf-cert.pem (generated)
    restconf_key: Path | None = None
    restconf_client_ca: Path | None = None

    def lab_credentials_in_use(self) -> list[str]:
        """Users whose password is a well-known lab default (the daemon warns about each)."""
        weak = []
        for user in self.users:
            for name, password in LAB_CREDENTIALS:
                if user.name == name and user.password_hash and verify_password(password, user.password_hash):
                    weak.append(user.name)
        return weak


def parse_listen(value: str, where: str = "listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` allowed) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise BootstrapError(f"{where}: expected HOST:PORT, got {value!r}")
    try:
        number = int(port)
    except ValueError:
        raise BootstrapError(f"{where}: port {port!r} is not a number") from None
    if not 0 <= number <= 65535:
        raise BootstrapError(f"{where}: port {number} is outside 0..65535")
    return host.strip("[]"), number


def load(path: Path) -> Bootstrap:
    """Read and check a bootstrap file."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BootstrapError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise BootstrapError(f"{path}: {exc}") from None
    return from_dict(raw, base=path.resolve().parent, name=str(path))


def from_dict(raw: dict[str, Any], *, base: Path, name: str = "bootstrap") -> Bootstrap:
    sections = _Section(raw, name)
    boot = Bootstrap()
    netconf = sections.table("netconf")
    if "listen" in netconf:
        boot.listen_host, boot.listen_port = parse_listen(netconf.str("listen"), netconf.where("listen"))
    if "host-key" in netconf:
        boot.host_key = Path(netconf.str("host-key"))
    if "max-message-size" in netconf:
        boot.max_message_size = netconf.int("max-message-size", minimum=4096)
    if "superuser-group" in netconf:
        boot.superuser_group = netconf.str("superuser-group")
    netconf.done()

    for index, entry in enumerate(sections.array("user")):
        user = _Section(entry, f"{name}: user[{index}]")
        user_name = user.str("name")
        password_hash = user.str("password-hash") if "password-hash" in user else None
        keys = tuple(user.str_list("authorized-keys")) if "authorized-keys" in user else ()
        groups = frozenset(user.str_list("groups")) if "groups" in user else frozenset()
        user.done()
        if password_hash is None and not keys:
            raise BootstrapError(f"{user.name}: needs password-hash or authorized-keys")
        if password_hash is not None and not password_hash.startswith("scrypt$"):
            raise BootstrapError(f"{user.name}: password-hash must come from `mipha hash-password`")
        if any(u.name == user_name for u in boot.users):
            raise BootstrapError(f"{user.name}: user {user_name!r} is defined twice")
        boot.users.append(User(user_name, password_hash, keys, groups))

    state = sections.table("state")
    if "dir" in state:
        boot.state_dir = _path(base, state.str("dir"))
    else:
        boot.state_dir = _path(base, str(boot.state_dir))
    if "startup" in state:
        boot.startup = _path(base, state.str("startup"))
    state.done()

    dataplane = sections.table("dataplane")
    if "backend" in dataplane:
        boot.dataplane = dataplane.choice("backend", BACKENDS)
    dataplane.done()

    log = sections.table("log")
    if "level" in log:
        boot.log_level = log.choice("level", LOG_LEVELS)
    if "syslog" in log:
        boot.log_syslog = log.bool("syslog")
    if "syslog-socket" in log:
        boot.syslog_socket = log.str("syslog-socket")
    log.done()

    metrics = sections.table("metrics")
    if "listen" in metrics:
        boot.metrics_listen = parse_listen(metrics.str("listen"), metrics.where("listen"))
    metrics.done()
    restconf = sections.table("restconf")
    if "listen" in restconf:
        boot.restconf_listen = parse_listen(restconf.str("listen"), restconf.where("listen"))
    for key, attr in (
        ("certificate", "restconf_cert"),
        ("private-key", "restconf_key"),
        ("client-ca", "restconf_client_ca"),
    ):
        if key in restconf:
            setattr(boot, attr, Path(restconf.str(key)))
    restconf.done()
    if (boot.restconf_cert is None) != (boot.restconf_key is None):
        raise BootstrapError(f"{name}: [restconf] certificate and private-key go together")
    if "redundancy" in raw:
        boot.redundancy = _redundancy(sections.table("redundancy"), base)
    sections.done()
    if boot.host_key is not None and not boot.host_key.is_absolute():
        boot.host_key = boot.state_dir / boot.host_key
    for attr in ("restconf_cert", "restconf_key", "restconf_client_ca"):
        value = getattr(boot, attr)
        if value is not None and not value.is_absolute():
            setattr(boot, attr, (base if attr == "restconf_client_ca" else boot.state_dir) / value)
    return boot


def _redundancy(section: _Section, base: Path) -> Any:
    """[redundancy]: hot standby on etcd (docs/redundancy.md); imported only when configured."""
    from .redundancy import TLS_FILES, RedundancyError, config_from

    raw: dict[str, object] = {
        "etcd": section.str_list("etcd"),
        "group": section.str("group"),
        "node": section.str("node"),
    }
    if "lease-ttl" in section:
        raw["lease-ttl"] = section.int("lease-ttl", minimum=1)
    if "warm-kernel" in section:
        raw["warm-kernel"] = section.bool("warm-kernel")
    if "leader-route" in section:
        raw["leader-route"] = section.bool("leader-route")
    for key in TLS_FILES:  # relative to this file, as [restconf] client-ca
        if key in section:
            raw[key] = _path(base, section.str(key))
    if "tls-server-name" in section:
        raw["tls-server-name"] = section.str("tls-server-name")
    section.done()
    try:
        return config_from(raw, section.name)
    except RedundancyError as exc:
        raise BootstrapError(str(exc)) from None


def _path(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


class _Section:
    """A TOML table whose keys are checked off as they are read; leftovers are errors."""

    def __init__(self, data: Any, name: str) -> None:
        if not isinstance(data, dict):
            raise BootstrapError(f"{name}: expected a table")
        self.data = data
        self.name = name
        self.seen: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def where(self, key: str) -> str:
        return f"{self.name}: {key}"

    def _get(self, key: str) -> Any:
        if key not in self.data:
            raise BootstrapError(f"{self.where(key)} is required")
        self.seen.add(key)
        return self.data[key]

    def str(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value:
            raise BootstrapError(f"{self.where(key)}: expected a non-empty string")
        return value

    def bool(self, key: builtins.str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise BootstrapError(f"{self.where(key)}: expected true or false")
        return value

    def str_list(self, key: builtins.str) -> list[builtins.str]:
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BootstrapError(f"{self.where(key)}: expected a list of strings")
        return value

    def int(self, key: builtins.str, *, minimum: int = 0) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise BootstrapError(f"{self.where(key)}: expected an integer >= {minimum}")
        return value

    def choice(self, key: builtins.str, allowed: tuple[builtins.str, ...]) -> builtins.str:
        value = self.str(key)
        if value not in allowed:
            raise BootstrapError(f"{self.where(key)}: {value!r} is not one of {', '.join(allowed)}")
        return value

    def table(self, key: builtins.str) -> _Section:
        self.seen.add(key)
        return _Section(self.data.get(key, {}), f"{self.name}: [{key}]")

    def array(self, key: builtins.str) -> list[Any]:
        self.seen.add(key)
        value = self.data.get(key, [])
        if not isinstance(value, list):
            raise BootstrapError(f"{self.name}: [[{key}]] must be an array of tables")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise BootstrapError(f"{self.name}: unknown key(s) {', '.join(unknown)}")
