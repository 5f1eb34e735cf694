"""What a worker knows about the partitions it owns: a due index, status counts and an
index of its SIMs by status, reason, pool and flags (simindex.py) each.

Built from the table once per partition after a rebalance (the only full scan), then
kept current by every state write, so ticks, gauges and listings never scan every SIM.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from ..codec import Card, PoolStored, Stored
from ..domain import Policy
from ..domain.fast import Hot
from ..domain.pools import PoolState, pool_due
from ..schedule import DueIndex
from ..simindex import SimIndex, keys_of

POOL_DUE = "pool:"
"""Due-index keys of pools (an ICCID never starts so)."""


class Summary(NamedTuple):
    status: str
    reasons: frozenset[str]
    throttled: bool
    pending: frozenset[str]
    pool_id: str | None = None


def summary(state: Hot | Card) -> Summary:
    return Summary(state.status, state.reasons, state.throttled, state.pending, state.pool_id)


@lru_cache(maxsize=16_384)
def index_keys(item: Summary) -> frozenset[str]:
    """Cached: a fleet has few distinct summaries, and a book's build asks for each SIM's."""
    return keys_of(item.status, item.reasons, item.throttled, item.pending, item.pool_id)


@dataclass(slots=True)
class PartitionBook:
    due: DueIndex = field(default_factory=DueIndex)
    statuses: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    pending: Counter[str] = field(default_factory=Counter)
    """SIMs with a command waiting for its result, per dimension."""
    rosters: dict[str, set[str]] = field(default_factory=dict)
    """Each pool of the partition: its members' ICCIDs (whom its notices go to)."""
    pools: dict[str, str] = field(default_factory=dict)
    """Each pool of the partition: ok, exhausted or unknown (for the gauges)."""
    index: SimIndex = field(default_factory=SimIndex)
    """Its SIMs by status, reason, pool and flags, in ICCID order (GET /sims)."""

    def count(self, item: Summary, sign: int) -> None:
        self.statuses[item.status] += sign
        self.statuses["throttled"] += sign * item.throttled
        for reason in item.reasons:
            self.reasons[reason] += sign
        for dimension in item.pending:
            self.pending[dimension] += sign


class Books:
    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self.partitions: dict[int, PartitionBook] = {}
        self.generation = 0
        """Bumped by every clear (rebalance): a build that spans one is thrown away."""

    def build(self, partition: int, cards: Iterable[Card]) -> PartitionBook:
        book = PartitionBook()
        for card in cards:
            self.add(book, card)
        self.partitions[partition] = book
        return book

    def add(self, book: PartitionBook, card: Card) -> None:
        book.due.schedule(card.iccid, card.due)
        item = summary(card)
        book.count(item, +1)
        book.index.add(card.iccid, index_keys(item))

    def record(self, partition: int, before: Summary | None, written: Stored | PoolStored) -> None:
        """A state was written; a partition not built yet will see it when built."""
        if isinstance(written, PoolStored):
            self.record_pool(partition, written)
            return
        after = written.hot
        book = self.partitions.get(partition)
        if book is None:
            return
        book.due.schedule(after.iccid, after.due)
        now = summary(after)
        if before is not None:
            book.count(before, -1)
        if before != now:  # most writes (a record counted) change none of the index's keys
            book.index.move(
                after.iccid, frozenset() if before is None else index_keys(before), index_keys(now)
            )
        book.count(now, +1)

    def clear(self) -> None:
        self.partitions.clear()
        self.generation += 1

    def totals(self) -> tuple[Counter[str], Counter[str], Counter[str]]:
        statuses: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        pending: Counter[str] = Counter()
        for book in self.partitions.values():
            statuses.update(book.statuses)
            reasons.update(book.reasons)
            pending.update(book.pending)
        return statuses, reasons, pending

    def record_pool(self, partition: int, written: PoolStored) -> None:
        state = written.state
        book = self.partitions.get(partition)
        if book is None:
            return
        book.rosters[state.pool_id] = state.roster
        book.pools[state.pool_id] = pool_condition(state)
        book.due.schedule(POOL_DUE + state.pool_id, pool_due(state, self.policy).timestamp())

    def roster(self, partition: int, pool_id: str) -> set[str] | None:
        book = self.partitions.get(partition)
        return None if book is None else book.rosters.setdefault(pool_id, set())


def pool_condition(state: PoolState) -> str:
    if state.definition is None:
        return "unknown"
    current = state.months.get(state.month)
    return "exhausted" if current is not None and current.exhausted else "ok"
