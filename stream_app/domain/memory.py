"""The dedupe memory (R2): which record ids a SIM has counted, kept cheap to rewrite.

In the steady state of a fleet a SIM sends a record every 15 minutes, so with a 7-day
horizon it remembers about 670 ids. Rewriting all of them for every record would make
what a record writes grow with what a SIM remembers. So the memory has tiers, each
written less often than the one before, and none rewritten as it grows:

* ``recent``: the newest ids (at most ``RECENT_MAX``), stored with the SIM's usage
  totals in one value, so a record's id and the total it was added to are written
  together (what makes counting exact when input is processed again after a crash);
* ``middle``: up to ``MIDDLE_MAX`` older ids, rewritten once every ``RECENT_MAX``
  records, when the recent ones move into it; it also lists the segments;
* ``segments``: everything older, in segments of one former ``middle`` each, written
  once when made and deleted once when the newest record they hold started before the
  horizon (or when the SIM remembers more than its cap, oldest first).

So a record writes, on average, its card plus a sixteenth of the middle tier plus a
128th of a segment: the same for a SIM remembering 100 ids or 20,000.

An id is remembered as the first 8 bytes of its BLAKE2b hash: two different ids of one
SIM are taken for the same with a probability of about 4e-17 per record at 670 ids.

Moving ids to an older tier writes the older tier first, so after a crash an id may be
in two tiers at once (harmless), never in none. ``written``, ``dropped`` and
``middle_changed`` tell the storage what to write since the memory was loaded.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

HASH_BYTES = 8
RECENT_MAX = 16
MIDDLE_MAX = 128


class Segment(NamedTuple):
    number: int
    newest: int
    """The newest start among its ids, minutes since the epoch."""
    hashes: bytes


def id_hash(record_id: str) -> bytes:
    return hashlib.blake2b(record_id.encode(), digest_size=HASH_BYTES).digest()


def _holds(hashes: bytes, digest: bytes) -> bool:
    """``digest`` is one of the 8-byte hashes laid end to end in ``hashes``."""
    found = hashes.find(digest)
    while found >= 0:
        if found % HASH_BYTES == 0:
            return True
        found = hashes.find(digest, found + 1)
    return False


class IdMemory:
    __slots__ = (
        "dropped",
        "middle",
        "middle_changed",
        "middle_newest",
        "next_number",
        "recent",
        "recent_newest",
        "segments",
        "written",
    )

    def __init__(
        self,
        recent: bytes = b"",
        recent_newest: int = 0,
        middle: bytes = b"",
        middle_newest: int = 0,
        segments: tuple[Segment, ...] = (),
        next_number: int = 0,
    ) -> None:
        self.recent = recent
        self.recent_newest = recent_newest
        """The newest start (minutes since the epoch) among the recent ids."""
        self.middle = middle
        self.middle_newest = middle_newest
        self.segments = segments
        """Oldest first."""
        self.next_number = next_number
        """The number the next segment takes (numbers are never reused while listed)."""
        self.written: list[Segment] = []
        self.dropped: list[int] = []
        self.middle_changed = False

    def __contains__(self, digest: bytes) -> bool:
        return (
            _holds(self.recent, digest)
            or _holds(self.middle, digest)
            or any(_holds(segment.hashes, digest) for segment in self.segments)
        )

    def __len__(self) -> int:
        held = len(self.recent) + len(self.middle) + sum(len(s.hashes) for s in self.segments)
        return held // HASH_BYTES

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdMemory):
            return NotImplemented
        return self.parts() == other.parts()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"IdMemory({len(self)} ids)"

    def parts(self) -> tuple[bytes, int, bytes, int, tuple[Segment, ...], int]:
        return (
            self.recent,
            self.recent_newest,
            self.middle,
            self.middle_newest,
            self.segments,
            self.next_number,
        )

    def add(self, digest: bytes, start_minute: int, cutoff_minute: int, cap: int) -> None:
        """Remember one id whose record started at ``start_minute``.

        ``cutoff_minute``: ids of records that started before it may be forgotten (they
        are refused by the horizon anyway); ``cap``: the most ids a SIM keeps (roughly:
        whole segments are dropped).
        """
        if len(self.recent) >= RECENT_MAX * HASH_BYTES:
            if len(self.middle) + len(self.recent) > MIDDLE_MAX * HASH_BYTES:
                self._archive(cutoff_minute, cap)
            self.middle += self.recent
            self.middle_newest = max(self.middle_newest, self.recent_newest)
            self.middle_changed = True
            self.recent, self.recent_newest = b"", 0
        self.recent += digest
        self.recent_newest = max(self.recent_newest, start_minute)

    def _archive(self, cutoff_minute: int, cap: int) -> None:
        """The middle tier becomes a segment; segments beyond the horizon go, and the
        oldest ones while more than ``cap`` ids remain."""
        segment = Segment(self.next_number, self.middle_newest, self.middle)
        self.next_number += 1
        self.written.append(segment)
        kept = [s for s in self.segments if s.newest >= cutoff_minute]
        kept.append(segment)
        total = sum(len(s.hashes) for s in kept) // HASH_BYTES + RECENT_MAX
        while len(kept) > 1 and total > cap:
            total -= len(kept.pop(0).hashes) // HASH_BYTES
        gone = {s.number for s in self.segments} - {s.number for s in kept}
        self.dropped += sorted(gone)
        self.segments = tuple(kept)
        self.middle, self.middle_newest = b"", 0


def remembered(hashes: bytes, first_minute: int, every: int) -> IdMemory:
    """The memory of a SIM that counted these ids in order, one every ``every`` minutes
    from ``first_minute``, none of them past the horizon yet: what ``add`` one by one
    would build, made at once (benchmarks preload a fleet of such SIMs)."""
    count = len(hashes) // HASH_BYTES
    recent = (count - 1) % RECENT_MAX + 1 if count else 0
    moved = count - recent
    blocks = moved // RECENT_MAX
    middle = ((blocks - 1) % (MIDDLE_MAX // RECENT_MAX) + 1) * RECENT_MAX if blocks else 0
    archived = moved - middle

    def newest(last: int) -> int:
        return first_minute + (last - 1) * every

    segments = tuple(
        Segment(
            n,
            newest((n + 1) * MIDDLE_MAX),
            hashes[n * MIDDLE_MAX * HASH_BYTES : (n + 1) * MIDDLE_MAX * HASH_BYTES],
        )
        for n in range(archived // MIDDLE_MAX)
    )
    memory = IdMemory(
        hashes[moved * HASH_BYTES :],
        newest(count) if recent else 0,
        hashes[archived * HASH_BYTES : moved * HASH_BYTES],
        newest(moved) if middle else 0,
        segments,
        len(segments),
    )
    memory.written = list(segments)
    memory.middle_changed = bool(moved)
    return memory
