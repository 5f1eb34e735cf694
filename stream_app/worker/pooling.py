"""Deciding a batch of pool messages: definitions (``sim.pools``) and what members report
(``sim.pool-usage``), each pool loaded once and stored once per batch (R17-R21).

The messages of one pool are applied in order to one state; the pool's alerts go to
``sim.alerts`` keyed by the pool id, its notices to ``sim.pool-notices`` keyed by each
member's ICCID, where the member's own partition takes them (domain/membership.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from ..codec import decode_message
from ..domain import InvalidInput, Output, Policy
from ..domain.inputs import Pool, pool
from ..domain.pools import PoolState, Report, apply_pool, apply_report, new_pool, report_of
from ..pipeline import Decision, rejected
from ..topics import POOLS
from .batch import Incoming


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


def decide_pools(
    logical: str, batch: list[Incoming], load: Load, now: datetime, policy: Policy, max_bytes: int
) -> tuple[list[tuple[Incoming, Decision]], list[PoolBatch]]:
    """The dead letters of the batch's bad messages, and each pool's new state and outputs."""
    invalid: list[tuple[Incoming, Decision]] = []
    by_pool: dict[str, list[tuple[Incoming, Pool | Report]]] = {}
    for incoming in batch:
        try:
            item = _parse(logical, incoming, max_bytes)
        except InvalidInput as exc:
            invalid.append(
                (incoming, rejected(incoming.source, incoming.raw, None, exc.code, exc.detail, "invalid"))
            )
        except Exception as exc:  # a bug must not stall the partition
            invalid.append(
                (
                    incoming,
                    rejected(incoming.source, incoming.raw, None, "internal_error", repr(exc), "error"),
                )
            )
        else:
            by_pool.setdefault(item.pool_id, []).append((incoming, item))
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
