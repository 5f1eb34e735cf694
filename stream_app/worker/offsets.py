"""Which input offsets are done, kept by the worker itself: the offsets it may commit.

Faust's own bookkeeping (acked offsets, "gaps" it takes for offsets that do not exist)
was seen to commit past input that no worker ever processed, and to stall commits after
a restart (docs/reliability.md). So the worker keeps its own ledger and Faust commits
only what it says (committer.py):

* Per input partition, a *frontier*: every offset below it has been processed, and its
  outputs and its SIMs' changelog records acknowledged by the broker. It starts, after
  each rebalance, at the group's committed offset (or the partition's first offset when
  nothing was committed yet), so it never claims work it has not seen done.
* A batch is handed a ticket for the offsets it covers; tickets of a partition complete
  in any order but move the frontier only in order, and a failed one stops it there for
  the rest of the generation (the offsets are processed again after the next rebalance
  or restart, which the SIMs' dedupe memory makes harmless).
* ``plan`` says which delivered offsets are new and whether any below them are missing:
  the worker reads those itself before going on (gaps.py), so input Faust dropped is
  processed late rather than never. Offsets arrive in runs read contiguously from the
  log (a fetched chunk, chunks.py): an offset missing inside a run was never in the log
  (compacted away, a transaction marker); only a run that starts past the cursor may
  follow records that were dropped.

Pure bookkeeping (no Kafka, no Faust), so its properties are tested directly.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple


class Partition(NamedTuple):
    topic: str
    partition: int


class Plan(NamedTuple):
    fresh: list[tuple[int, int]]
    """Per run with offsets at or above the cursor: its index and the index of its first
    such offset, in delivery order."""
    contiguous: bool
    """True when the fresh offsets run on from the cursor with no hole a run does not
    vouch for: nothing is missing."""
    upto: int
    """The offset after the last fresh one (the cursor when nothing is fresh)."""


@dataclass
class Ticket:
    partition: Partition
    generation: int
    upto: int
    """The offset the frontier moves to when this ticket and every earlier one are done."""
    outcome: bool | None = None


@dataclass
class _Track:
    frontier: int
    cursor: int
    """The first offset no batch has taken yet (the frontier plus pending tickets)."""
    pending: deque[Ticket] = field(default_factory=deque)
    broken: bool = False


class Ledger:
    def __init__(self) -> None:
        self.generation = 0
        self._tracks: dict[Partition, _Track] = {}

    def reassigned(self) -> None:
        """A rebalance: every frontier is re-read from the group's committed offsets."""
        self.generation += 1
        self._tracks.clear()

    def frontier(self, partition: Partition) -> int | None:
        track = self._tracks.get(partition)
        return None if track is None else track.frontier

    def begin(self, partition: Partition, offset: int, generation: int) -> None:
        """Start a partition's frontier at ``offset`` unless a rebalance came meanwhile."""
        if generation == self.generation and partition not in self._tracks:
            self._tracks[partition] = _Track(offset, offset)

    def plan(self, partition: Partition, runs: Iterable[Sequence[int]]) -> Plan | None:
        """Which delivered offsets are new. None when the partition has no frontier.

        ``runs``: the delivered offsets in delivery order, in runs that are each strictly
        ascending and were read contiguously from the log (one fetched chunk; a single
        message is a run of one).
        """
        if partition not in self._tracks:
            return None
        expected = self.cursor(partition)
        fresh: list[tuple[int, int]] = []
        contiguous = True
        for index, run in enumerate(runs):
            if not run or run[-1] < expected:
                continue
            first = bisect_left(run, expected)
            if first == 0 and run[0] != expected:
                # Past what was taken, and nothing in this run says that the offsets
                # in between do not exist.
                contiguous = False
            fresh.append((index, first))
            expected = run[-1] + 1
        return Plan(fresh, contiguous, expected)

    def cursor(self, partition: Partition) -> int:
        """The first offset no batch has taken yet: below it, delivered again is done."""
        return self._tracks[partition].cursor

    def ticket(self, partition: Partition, upto: int, generation: int) -> Ticket:
        """A batch planned in ``generation`` takes the offsets from the cursor to ``upto``.

        A ticket of an older generation is inert: after a rebalance the frontier starts
        again from the committed offset, and what that batch did is done again.
        """
        ticket = Ticket(partition, generation, upto)
        track = self._tracks.get(partition)
        if generation == self.generation and track is not None and upto > track.cursor:
            track.cursor = upto
            track.pending.append(ticket)
        return ticket

    def done(self, ticket: Ticket, ok: bool) -> None:
        """The ticket's outputs and states are acknowledged (ok) or could not be."""
        ticket.outcome = ok
        track = self._tracks.get(ticket.partition)
        if ticket.generation != self.generation or track is None:
            return
        while track.pending and track.pending[0].outcome is not None:
            head = track.pending.popleft()
            if not head.outcome:
                track.broken = True
            if not track.broken:
                track.frontier = max(track.frontier, head.upto)

    def committable(
        self, committed: Mapping[Partition, int | None], assigned: Iterable[Partition]
    ) -> dict[Partition, int]:
        """The frontier of each assigned partition that is ahead of its committed offset."""
        offsets: dict[Partition, int] = {}
        for partition in assigned:
            track = self._tracks.get(partition)
            if track is None:
                continue
            before = committed.get(partition)
            if before is None or track.frontier > before:
                offsets[partition] = track.frontier
        return offsets

    def stuck(self) -> list[Partition]:
        """Partitions whose frontier stopped at a failed write (until the next rebalance)."""
        return [partition for partition, track in self._tracks.items() if track.broken]
