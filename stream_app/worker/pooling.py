"""Deciding a batch of pool messages: definitions (``sim.pools``) and what members report
(``sim.pool-usage``), each pool loaded once and stored once per batch (R17-R21).

The messages of one pool are applied in order to one state; the pool's alerts go to
``sim.alerts`` keyed by the pool id, its notices to ``sim.pool-notices`` keyed by each
member's ICCID, where the member's own partition takes them (domain/membership.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, NamedTuple

from ..codec import PoolStored, decode_message, read_pool_index
from ..domain import InvalidInput, Output, Policy
from ..domain.inputs import Pool, pool
from ..domain.pools import PoolState, Report, apply_pool, apply_report, new_pool, pool_from_dict, report_of
from ..pipeline import Decision, rejected
from ..topics import POOLS
from .batch import Incoming, grouped
from .writer import Written

ROWS_PER_WRITE = 1000
"""Messages of one pool decided per write of it. Each member a write changes is a row in
the pool's value too (codec.pool_entries), so this bounds that value (about 60 bytes a
row, twice over after a crash) far below Kafka's message limit, whatever the batch size
and however many members the pool has."""


class PoolBatch(NamedTuple):
    pool_id: str
    state: PoolState
    last: Incoming
    outputs: list[Output]
    outcomes: list[str]


Load = Callable[[str, list[str]], PoolState | None]
"""The pool's stored state with the rows of the given members, or None."""


def _parse(logical: str, incoming: Incoming, max_bytes: int) -> Pool | Report:
    message = decode_message(incoming.raw, max_bytes)
    item: Pool | Report = pool(message) if logical == POOLS else report_of(message)
    if incoming.key is not None and incoming.key != item.pool_id.encode():
        raise InvalidInput("key_mismatch", "the Kafka key must be the message's pool_id")
    return item


def _pool_id(item: Pool | Report) -> str:
    return item.pool_id


def decide_pools(
    logical: str, batch: list[Incoming], load: Load, now: datetime, policy: Policy, max_bytes: int
) -> tuple[list[tuple[Incoming, Decision]], list[PoolBatch]]:
    """The dead letters of the batch's bad messages, and each pool's new state and outputs."""
    invalid, by_pool = grouped(batch, lambda incoming: _parse(logical, incoming, max_bytes), _pool_id)
    pools = []
    for pool_id, entries in by_pool.items():
        members = sorted({item.iccid for _incoming, item in entries if isinstance(item, Report)})
        try:
            state = load(pool_id, members) or new_pool(pool_id, now, policy)
            outputs: list[Output] = []
            outcomes = []
            for _incoming, item in entries:
                step = (
                    apply_pool(state, item, now, policy)
                    if isinstance(item, Pool)
                    else apply_report(state, item, now, policy)
                )
                outputs += step.outputs
                outcomes.append(step.outcome)
        except Exception as exc:  # e.g. a stored state that cannot be read: keep the evidence
            invalid += [
                (
                    incoming,
                    rejected(
                        incoming.source,
                        incoming.raw,
                        None,
                        "internal_error",
                        f"pool {pool_id}: {exc!r}",
                        "error",
                    ),
                )
                for incoming, _item in entries
            ]
            continue
        pools.append(PoolBatch(pool_id, state, entries[-1][0], outputs, outcomes))
    return invalid, pools


def split_by_pool(batch: list[Incoming], limit: int = ROWS_PER_WRITE) -> list[list[Incoming]]:
    """The batch cut, in order, into parts with at most ``limit`` messages of any one pool
    (keyed by the pool id): one write of a pool per part (see ROWS_PER_WRITE)."""
    parts: list[list[Incoming]] = [[]]
    counts: dict[bytes | None, int] = {}
    for incoming in batch:
        if counts.get(incoming.key, 0) >= limit:
            parts.append([])
            counts = {}
        counts[incoming.key] = counts.get(incoming.key, 0) + 1
        parts[-1].append(incoming)
    return [part for part in parts if part]


def joined(parts: list[Written]) -> Written:
    return Written(
        [w for part in parts for w in part.failed],
        [d for part in parts for d in part.deliveries],
        sum(part.unrecorded for part in parts),
    )


class PoolScan:
    """The pools found in a scan of the table, with their rosters: each member row's
    ``in``, overridden by the rows a pool's value still carries (written there first,
    codec.pool_entries), so a crash between the two writes loses no member."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, dict[str, bool]] = {}

    def add(self, key: bytes, raw: bytes) -> None:
        pool_id, iccid, value = read_pool_index(key, raw)
        if iccid is None:
            self.values[pool_id] = value
        else:
            self.rows.setdefault(pool_id, {})[iccid] = bool(value["in"])

    def pools(self) -> Iterator[PoolStored]:
        for pool_id, value in self.values.items():
            rows = self.rows.get(pool_id, {})
            rows.update((iccid, bool(row["in"])) for iccid, row in value.get("rows", {}).items())
            state = pool_from_dict(value)
            state.roster = {iccid for iccid, member in rows.items() if member}
            yield PoolStored(state, value.get("p"))
