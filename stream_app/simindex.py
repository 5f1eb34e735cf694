"""Which SIMs of a partition match a filter, in ICCID order, without scanning them all.

``GET /sims?status=suspended&reason=quota`` lists SIMs across a fleet of millions. A
worker keeps, per owned partition, one sorted list of ICCIDs per *key*: its status
(``status:active``...), each reason (``reason:quota``...), ``throttled``, each pending
dimension (``pending:suspension``...) and each pool (``pool:<id>``). Every SIM is in
exactly one status list, so the lists hold about one pointer per SIM plus one per
reason, pool or flag it has; the ICCID strings themselves are shared with the due
index. Lists are kept current by every state write (only a write that changes a key
touches them) and built once per rebalance from the table: appended while the table is
read, sorted once when first used.

A page walks the smallest list the filter names from the cursor on and checks the
other keys by bisection, so its cost is the page, not the fleet. A filter with no list
of its own (``throttled=false``) walks every SIM of the partition; each page stops after
``budget`` SIMs looked at, so no request does unbounded work: the page then ends early,
and its frontier says how far it looked.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

from sortedcontainers import SortedList

STATUSES = ("active", "suspended", "cancelled")
EVERY_SIM = tuple(f"status:{status}" for status in STATUSES)
BUDGET = 20_000
"""SIMs a partition's page looks at, at most (a few milliseconds)."""


def keys_of(
    status: str, reasons: Iterable[str], throttled: bool, pending: Iterable[str], pool_id: str | None
) -> frozenset[str]:
    keys = {f"status:{status}", *(f"reason:{r}" for r in reasons), *(f"pending:{d}" for d in pending)}
    if throttled:
        keys.add("throttled")
    if pool_id is not None:
        keys.add(f"pool:{pool_id}")
    return frozenset(keys)


@dataclass(frozen=True, slots=True)
class Want:
    """A filter: a SIM matches when it has a key of each group and none of ``none_of``."""

    groups: tuple[frozenset[str], ...] = ()
    none_of: frozenset[str] = field(default_factory=frozenset)

    def matches(self, keys: frozenset[str]) -> bool:
        return all(group & keys for group in self.groups) and not self.none_of & keys


Page = tuple[list[str], str | None]
"""Matching ICCIDs after the cursor, in order, and the frontier: every match up to it
(inclusive) is in the list; None when the list holds every match after the cursor."""


class SimIndex:
    """One partition's sorted ICCID lists, by key."""

    __slots__ = ("_lists", "_loading")

    def __init__(self) -> None:
        self._lists: dict[str, Any] = {}  # key -> SortedList[str]
        self._loading: dict[str, list[str]] | None = {}
        """While the book is built: appended to, sorted at first use."""

    def add(self, iccid: str, keys: Iterable[str]) -> None:
        if self._loading is not None:
            for key in keys:
                self._loading.setdefault(key, []).append(iccid)
            return
        for key in keys:
            self._insert(key, iccid)

    def move(self, iccid: str, before: frozenset[str], after: frozenset[str]) -> None:
        """A SIM's keys changed (``before`` empty: a new SIM)."""
        self._seal()
        for key in before - after:
            listed = self._lists.get(key)
            if listed is not None:
                listed.discard(iccid)
                if not listed and key.startswith("pool:"):
                    del self._lists[key]  # pools come and go; statuses and reasons stay
        for key in after - before:
            self._insert(key, iccid)

    def size(self, key: str) -> int:
        self._seal()
        listed = self._lists.get(key)
        return 0 if listed is None else len(listed)

    def has(self, key: str, iccid: str) -> bool:
        self._seal()
        return self._has(key, iccid)

    def _has(self, key: str, iccid: str) -> bool:
        listed = self._lists.get(key)
        return listed is not None and iccid in listed

    def page(self, want: Want, after: str, limit: int, budget: int = BUDGET) -> Page:
        """Up to ``limit`` ICCIDs greater than ``after`` that match ``want``, in order."""
        self._seal()
        if want.groups:
            source = min(want.groups, key=lambda group: sum(self.size(k) for k in group))
            rest = [group for group in want.groups if group is not source]
        else:
            source, rest = frozenset(EVERY_SIM), []
        if not rest and not want.none_of:  # every SIM walked matches
            found = list(islice(self._walk(source, after), limit))
            return found, found[-1] if len(found) == limit else None
        found = []
        for looked, iccid in enumerate(self._walk(source, after), 1):
            if all(any(self._has(k, iccid) for k in group) for group in rest) and not any(
                self._has(k, iccid) for k in want.none_of
            ):
                found.append(iccid)
                if len(found) >= limit:
                    return found, iccid
            if looked >= budget:
                return found, iccid
        return found, None

    def _walk(self, keys: Iterable[str], after: str) -> Iterator[str]:
        """The ICCIDs in any of ``keys``' lists greater than ``after``, once each, in order."""
        ranges = [
            self._lists[key].irange(minimum=after, inclusive=(False, True))
            for key in sorted(keys)
            if key in self._lists
        ]
        if len(ranges) == 1:
            yield from ranges[0]
            return
        previous = None
        for iccid in heapq.merge(*ranges):
            if iccid != previous:
                yield iccid
                previous = iccid

    def _insert(self, key: str, iccid: str) -> None:
        listed = self._lists.get(key)
        if listed is None:
            self._lists[key] = SortedList((iccid,))
        elif iccid not in listed:
            listed.add(iccid)

    def _seal(self) -> None:
        if self._loading is not None:
            loading, self._loading = self._loading, None
            for key, iccids in loading.items():
                self._lists[key] = SortedList(set(iccids))


T = TypeVar("T")


def merge(
    pages: Sequence[tuple[list[T], str | None]], limit: int, key: Callable[[T], str]
) -> tuple[list[T], str | None]:
    """One page from the pages of several partitions or workers, each sorted by ICCID.

    Only what every source has answered for can be shown: items beyond the nearest
    frontier wait for the next page. The result's frontier keeps the meaning of a
    ``Page``'s, so the merged pages of merged pages are right too.
    """
    frontiers = [frontier for _items, frontier in pages if frontier is not None]
    cutoff = min(frontiers) if frontiers else None
    by_iccid: dict[str, T] = {}
    for items, _frontier in pages:
        for item in items:
            iccid = key(item)
            if cutoff is None or iccid <= cutoff:
                by_iccid.setdefault(iccid, item)  # a partition answered twice in a rebalance
    ordered = [by_iccid[iccid] for iccid in sorted(by_iccid)]
    if len(ordered) > limit:
        return ordered[:limit], key(ordered[limit - 1])
    return ordered, cutoff
