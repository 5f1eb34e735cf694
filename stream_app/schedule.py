"""A due-time index: which SIMs have something due by a given instant (seconds since
the epoch).

Month starts (and later expiries) are found through this index, never by scanning
every SIM on every tick. Replay keeps one index; a worker keeps one per owned partition
and rebuilds it from the table once after each rebalance.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator


class DueIndex:
    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, iccid: str, due: float) -> None:
        """Set the SIM's next due instant; a superseded heap entry is skipped when popped."""
        if self._due.get(iccid) != due:
            self._due[iccid] = due
            heapq.heappush(self._heap, (due, iccid))

    def pop_due(self, until: float) -> Iterator[tuple[float, str]]:
        """Yield (due, iccid) for every SIM due at or before ``until``, earliest first.

        Each yielded SIM is unscheduled; the caller schedules it again after its step.
        """
        heap = self._heap
        while heap and heap[0][0] <= until:
            due, iccid = heapq.heappop(heap)
            if self._due.get(iccid) == due:
                del self._due[iccid]
                yield due, iccid

    def next_due(self) -> float | None:
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None
