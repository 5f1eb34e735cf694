"""Where "now" comes from. The engine never reads a clock; the agents and replay do."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SimulatedClock:
    """Simulated time: ``start`` at wall time ``anchor`` (epoch seconds), then ``speed``x.

    Anchoring on the wall clock rather than on process start lets a restarted worker
    continue the same simulated timeline (demos, restart tests).
    """

    start: datetime
    speed: float
    anchor: float

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.anchor) * self.speed)
