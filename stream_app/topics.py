"""The one registry of topics: logical names, default Kafka names, direction, compaction.

Every topic is keyed by ICCID and the input topics, the tick topic and the table
changelog share one partition count, so one SIM's whole state lives in one partition.
"""

from __future__ import annotations

from dataclasses import dataclass

USAGE, SUBSCRIPTIONS, BILLING, REQUESTS = "usage", "subscriptions", "billing", "requests"
COMMAND_RESULTS, INVENTORY, POOLS = "command_results", "inventory", "pools"
POOL_USAGE, POOL_NOTICES = "pool_usage", "pool_notices"
COMMANDS, ALERTS, CHARGES, AUDIT, DEADLETTER = "commands", "alerts", "charges", "audit", "deadletter"
TICKS = "ticks"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    logical: str
    default_name: str
    direction: str
    """in | out | internal"""
    compacted: bool = False


REGISTRY: tuple[TopicSpec, ...] = (
    TopicSpec(USAGE, "sim.usage", "in"),
    TopicSpec(SUBSCRIPTIONS, "sim.subscriptions", "in", compacted=True),
    TopicSpec(BILLING, "sim.billing", "in"),
    TopicSpec(REQUESTS, "sim.requests", "in"),
    TopicSpec(COMMAND_RESULTS, "sim.command-results", "in"),
    TopicSpec(INVENTORY, "sim.inventory", "in"),
    # Keyed by the pool id (the others by ICCID); same partition count: a pool lives in
    # the partition of its pool id, with what its members report to it.
    TopicSpec(POOLS, "sim.pools", "in", compacted=True),
    TopicSpec(COMMANDS, "sim.commands", "out"),
    TopicSpec(ALERTS, "sim.alerts", "out"),
    TopicSpec(CHARGES, "sim.charges", "out"),
    TopicSpec(AUDIT, "sim.audit", "out"),
    TopicSpec(DEADLETTER, "sim.deadletter", "out"),
    # Per-partition ticks drive time-based work on the worker that owns the partition.
    TopicSpec(TICKS, "sim.ticks", "internal"),
    # Members to their pool (keyed by pool id) and a pool to its members (by ICCID).
    TopicSpec(POOL_USAGE, "sim.pool-usage", "internal"),
    TopicSpec(POOL_NOTICES, "sim.pool-notices", "internal"),
)

BY_LOGICAL = {spec.logical: spec for spec in REGISTRY}
INPUTS = tuple(s.logical for s in REGISTRY if s.direction == "in")
OUTPUTS = tuple(s.logical for s in REGISTRY if s.direction == "out")
CONSUMED = (*INPUTS, POOL_USAGE, POOL_NOTICES)
"""What the worker reads, besides its ticks."""
SENT = (*OUTPUTS, POOL_USAGE, POOL_NOTICES)
"""What the worker writes, besides its table."""


def env_name(logical: str) -> str:
    return f"STREAM_APP_TOPIC_{logical.upper()}"
