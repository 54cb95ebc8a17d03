"""The home-agent engine: per virtual router state (bindings, pools, replay state, counters), no I/O.

Public API (what the daemon, the NETCONF glue and the tests use)::

    engine = HomeAgent(VirtualRouterConfig(...))
    out = engine.handle_datagram(data, source=(ip, port), received_on=addr, now=mono, wallclock=unix)
    engine.handle_timer(now); engine.get_timer()
    engine.next_intent() / engine.drain_intents()   # ha.dataplane.intents, in order
    engine.next_event()                             # BindingCreated / BindingRemoved / RegistrationDenied
    txn = engine.prepare(new_config)                # raises ConfigRefused(message, path=...)
    txn = engine.prepare_change(ConfigChange(...))  # the same for a keyed change: costs what it touches
    engine.apply(txn) / engine.abort(txn)
    engine.binding(key), engine.bindings_after(key, limit), engine.statistics, engine.violations
    engine.clear_bindings(home_address=|nai=|care_of_address=), engine.clear_statistics()
"""

from .config import (
    AddressPool,
    ConfigChange,
    ForeignAgent,
    HomeAgentConfig,
    MobileNode,
    SecurityAssociation,
    VirtualRouterConfig,
)
from .errors import ConfigRefused
from .events import BindingCreated, BindingRemoved, Event, RegistrationDenied, RemovalReason
from .home_agent import BindingInfo, HomeAgent, Outgoing, PoolUsage, ReplayState
from .statistics import Statistics, Violation
from .transaction import Prepared

__all__ = [
    "AddressPool",
    "BindingCreated",
    "BindingInfo",
    "BindingRemoved",
    "ConfigChange",
    "ConfigRefused",
    "Event",
    "ForeignAgent",
    "HomeAgent",
    "HomeAgentConfig",
    "MobileNode",
    "Outgoing",
    "PoolUsage",
    "Prepared",
    "RegistrationDenied",
    "RemovalReason",
    "ReplayState",
    "SecurityAssociation",
    "Statistics",
    "Violation",
    "VirtualRouterConfig",
]
