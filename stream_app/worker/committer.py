"""Faust commits the offset ledger's frontiers, never its own acked offsets.

Faust 0.15.3 decides what to commit from the offsets its streams acked, merged with
"gaps" (offsets it takes for nonexistent); with no committed offset yet it does not
check the head at all. The chaos tests saw both commit past input no worker processed,
and duplicates in the acked list stall commits (docs/reliability.md). Everything
else about committing stays Faust's: when (every ``broker_commit_interval`` and
``broker_commit_every``, and on rebalance), the producer flush before it, the commit
call itself and its error handling.

Two private methods of Faust's consumer are replaced, so faust-streaming is pinned to
0.15.x and tests/unit/test_committer.py checks they still exist with these signatures.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from faust.types import TP

from .offsets import Ledger, Partition


def ledger_consumer(base: type, ledger: Ledger, topics: frozenset[str]) -> type:
    class LedgerConsumer(base):  # type: ignore[misc]
        def _filter_tps_with_pending_acks(self, topics_or_tps: Any = None) -> Iterator[TP]:
            for tp in self.assignment():
                if tp.topic in topics and (
                    topics_or_tps is None or tp in topics_or_tps or tp.topic in topics_or_tps
                ):
                    yield tp

        def _filter_committable_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
            wanted = list(tps)
            # Faust's acked lists are not consulted any more; emptied so they don't grow.
            for tp in wanted:
                self._acked.pop(tp, None)
                self._acked_index.pop(tp, None)
                self._gap.pop(tp, None)
            committed = {Partition(tp.topic, tp.partition): self._committed_offset[tp] for tp in wanted}
            offsets = ledger.committable(committed, committed.keys())
            return {TP(p.topic, p.partition): offset for p, offset in offsets.items()}

    # Not renamed: mode registers a service's tasks under its qualified name.
    return LedgerConsumer
