"""The worker's log of what it refused: dead letters summarised, not one line each.

A feed that sends garbage would otherwise either flood the log (a line per message) or,
as before, leave nothing in it at all. So each input topic and error code gets at most
one warning a minute: the number refused since the last line and since start-up, and
one example saying where it was (``topic[partition]@offset``), why, and how its payload
starts. A count held back inside the minute is written when the minute is up, whether
or not another dead letter comes. `stream-app deadletters` shows every letter in full.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..ops.letters import describe_payload, excerpt, payload, where

INTERVAL = 60.0
"""Seconds between two lines for one topic and error."""

Schedule = Callable[[float, Callable[[], None]], object]


@dataclass(slots=True)
class _Tally:
    count: int = 0
    """Refused since the last line."""
    total: int = 0
    """Refused since start-up."""
    example: Mapping[str, Any] | None = None
    written_at: float | None = None
    """Clock time of the last line."""


class Refusals:
    """Counts dead letters per (input topic, error) and logs a rate-limited summary.

    ``clock`` gives seconds (monotonic); ``schedule(delay, callback)`` arranges for a
    held-back count to be written later; by default the running event loop's
    ``call_later``, or nothing outside a loop (``flush`` then writes it).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        schedule: Schedule | None = None,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.schedule = schedule or _call_later
        self.tallies: dict[tuple[str, str], _Tally] = {}
        self._armed = False

    def add(self, letter: Mapping[str, Any]) -> None:
        key = (str(letter.get("topic", "")), str(letter.get("error", "")))
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = _Tally()
        tally.count += 1
        tally.total += 1
        if tally.example is None:
            tally.example = letter
        now = self.clock()
        if tally.written_at is None or now - tally.written_at >= self.interval:
            self._write(key, tally, now)
        elif not self._armed:
            self._armed = self.schedule(tally.written_at + self.interval - now, self.flush) is not None

    def flush(self) -> None:
        """Write every held-back count whose minute is up; arrange for the others."""
        self._armed = False
        now = self.clock()
        due_next: float | None = None
        for key, tally in self.tallies.items():
            if not tally.count or tally.written_at is None:
                continue
            wait = tally.written_at + self.interval - now
            if wait <= 0:
                self._write(key, tally, now)
            else:
                due_next = wait if due_next is None else min(due_next, wait)
        if due_next is not None:
            self._armed = self.schedule(due_next, self.flush) is not None

    def _write(self, key: tuple[str, str], tally: _Tally, now: float) -> None:
        topic, error = key
        letter = tally.example or {}
        count = tally.count
        if tally.written_at is None:
            span = ""
        else:
            span = f" in the last {now - tally.written_at:.0f} s ({tally.total:,} since start)"
        noun = "message" if count == 1 else "messages"
        self.logger.warning(
            "refused %s %s from %s: %s%s; e.g. %s: %s; %s",
            f"{count:,}",
            noun,
            topic or "?",
            error,
            span,
            where(letter),
            letter.get("detail", ""),
            describe_payload(letter, limit=100),
            extra={
                # its own limit, per topic and error: logs.Repeats must not merge them
                "condition": f"refused {topic} {error}",
                "fields": {
                    "deadletter_topic": topic,
                    "error": error,
                    "count": count,
                    "total": tally.total,
                    "example": {
                        "where": where(letter),
                        "detail": letter.get("detail", ""),
                        "payload": excerpt(payload(letter), 100),
                    },
                },
            },
        )
        tally.count, tally.example, tally.written_at = 0, None, now


def _call_later(delay: float, callback: Callable[[], None]) -> object:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop.call_later(max(delay, 0.0), callback)
