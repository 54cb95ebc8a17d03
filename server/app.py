"""Start the NETCONF server standalone: `await start_server(config)` → handle (`close()`).

The daemon (`mipha run`) wires its engine in through `subscribers` and `providers`; tests pass their
own validator when needed. Without one, server/validation.py's Validator is used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncssh

from server.config import ServerConfig
from server.core import NetconfCore
from server.datastore import ValidatorLike
from server.operational import OperationalProvider
from server.schema import Schema
from server.session import listen, load_or_create_host_key
from server.subscribers import ConfigSubscriber
from server.yang import enable_features

log = logging.getLogger(__name__)


@dataclass
class ServerHandle:
    """A running server: `port` is the bound port (useful with port 0), `core` the shared state."""

    acceptor: asyncssh.SSHAcceptor
    core: NetconfCore
    host: str
    port: int

    def close(self) -> None:
        self.core.close()
        self.acceptor.close()

    async def wait_closed(self) -> None:
        await self.acceptor.wait_closed()
        await self.core.wait_idle()  # a confirmed-commit rollback still running finishes


def build_core(
    config: ServerConfig,
    validator: ValidatorLike | None = None,
    subscribers: list[ConfigSubscriber] | None = None,
    providers: list[OperationalProvider] | None = None,
) -> NetconfCore:
    if validator is None:
        from server.validation import Validator

        validator = Validator(config.yang_dir)
    ctx = validator.ctx
    for name in config.extra_modules:
        try:
            ctx.load_module(name)
        except Exception as exc:  # a missing standard module only loses that feature
            log.warning("cannot load YANG module %s: %s", name, exc)
    for name, features in config.features.items():
        try:
            enable_features(ctx, name, features)
        except Exception as exc:
            log.warning("cannot enable features %s of %s: %s", features, name, exc)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    return NetconfCore(
        Schema(ctx),
        validator,
        state_dir=config.state_dir,
        superuser_group=config.superuser_group,
        max_message_size=config.max_message_size,
        event_log_size=config.event_log_size,
        subscribers=subscribers,
        providers=providers,
    )


async def start_server(
    config: ServerConfig,
    *,
    validator: ValidatorLike | None = None,
    subscribers: list[ConfigSubscriber] | None = None,
    providers: list[OperationalProvider] | None = None,
    seed_config: bytes | None = None,
    replay: bool = False,
) -> ServerHandle:
    """construct → seed (`seed_config`, first start only) → with `replay`, bring the subscribers up
    from running (`core.replay_running`) → listen. A subscriber refusing the replay raises its
    RpcError and nothing listens. Without `replay` the caller must call `core.replay_running()`
    itself (clients may connect before it does)."""
    core = build_core(config, validator, subscribers, providers)
    if seed_config is not None and core.seed(seed_config):
        log.info("first start: bootstrap configuration installed as startup and running")
    if replay:
        await core.replay_running()
    key = load_or_create_host_key(config.host_key)
    acceptor = await listen(
        core,
        host=config.host,
        port=config.port,
        users=config.users,
        host_key=key,
        fail_delay=config.auth_fail_delay,
        login_timeout=config.login_timeout,
        max_sessions=config.max_sessions,
    )
    port = acceptor.sockets[0].getsockname()[1] if acceptor.sockets else config.port
    log.info("NETCONF server listening on %s:%d", config.host, port)
    return ServerHandle(acceptor, core, config.host, port)
