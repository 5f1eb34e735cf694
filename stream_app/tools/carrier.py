"""A simulated carrier: what a provisioning system meets when it applies commands.

Pure: no Kafka and no clock of its own; every call is given "now", so tests drive it
with plain datetimes and `stream-app provision` (provision.py) with the worker's clock.
It behaves like the carrier APIs stream-app's commands end up at:

- Each call is answered after a latency, a fixed part plus a random jitter (carriers
  answer in seconds, some schedule the change and report later).
- A share of calls is refused with ``failed`` (busy, try again: stream-app sends the
  command again) and a share with ``rejected`` (final: stream-app gives up and alerts).
- A second status change of the same card within the repeat window (OneLink's three
  minutes) is refused with ``failed``; asking for the status a card already has is no
  change, and is applied.
- A cancelled number (销户) is never re-activated, suspended or throttled: ``rejected``.
- Optionally a rate limit: calls wait for their turn (Cisco Control Center allows 5 a
  second), so a burst is answered late rather than refused.
- Every inventory interval, one status message per card it knows (the status dump);
  before it, the carrier may change an idle card's status on its own (a card that
  reactivates itself, a suspension that did not stick): drift, for stream-app to repair.

Every chance is drawn from a hash of the seed and what it is about (a command's id and
attempt; a card and an inventory round), not from a shared random stream, so the same
command attempt meets the same fate whatever order commands arrive in. A card it never
heard of is taken to be active and not throttled.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..domain import InvalidInput, iccid_of
from ..domain.outputs import derive_id
from ..domain.timeutil import format_time
from ..topics import COMMAND_RESULTS, INVENTORY

ACTIVE, SUSPENDED, CANCELLED = "active", "suspended", "cancelled"
APPLIED, FAILED, REJECTED = "applied", "failed", "rejected"
TARGET = {"suspend": SUSPENDED, "restore": ACTIVE, "cancel": CANCELLED}
"""The status each status-changing action asks for."""
ACTIONS = (*TARGET, "throttle", "unthrottle")
PAST = {"suspend": "suspended", "restore": "restored", "cancel": "cancelled"}


class BadCommand(ValueError):
    """A message a carrier cannot be asked about (no command id or ICCID to answer to)."""


@dataclass(frozen=True, slots=True)
class Command:
    command_id: str
    iccid: str
    action: str
    attempt: int = 1
    speed_kbps: int | None = None

    @classmethod
    def parse(cls, value: Any) -> Command:
        """The fields the carrier needs. An unknown action is the carrier's to refuse,
        so it is kept; what leaves nothing to answer to is a ``BadCommand``."""
        if not isinstance(value, dict):
            raise BadCommand("a command is a JSON object")
        command_id = value.get("command_id")
        if not isinstance(command_id, str) or not command_id:
            raise BadCommand("no command_id")
        try:
            iccid = iccid_of(value)
        except InvalidInput as exc:
            raise BadCommand(exc.detail) from None
        attempt = value.get("attempt", 1)
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise BadCommand("attempt must be a whole number from 1")
        action = value.get("action")
        speed = value.get("speed_kbps")
        return cls(
            command_id=command_id,
            iccid=iccid,
            action=action if isinstance(action, str) else repr(action),
            attempt=attempt,
            speed_kbps=speed if isinstance(speed, int) and not isinstance(speed, bool) else None,
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """A card the carrier refuses: the next ``times`` calls for it, or all (None)."""

    outcome: str
    times: int | None = None

    @classmethod
    def parse(cls, text: str) -> tuple[str, Refusal]:
        """``ICCID:OUTCOME[:TIMES]``, e.g. ``89860012345678901234:failed:1``."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or parts[1] not in (FAILED, REJECTED):
            raise ValueError(f"{text!r}: use ICCID:failed or ICCID:rejected, optionally :TIMES")
        try:
            iccid = iccid_of({"iccid": parts[0]})
        except InvalidInput as exc:
            raise ValueError(f"{text!r}: {exc.detail}") from None
        times = int(parts[2]) if len(parts) == 3 else None
        if times is not None and times < 1:
            raise ValueError(f"{text!r}: TIMES must be at least 1")
        return iccid, cls(parts[1], times)


@dataclass(frozen=True, slots=True)
class CarrierOptions:
    latency: timedelta = timedelta(seconds=1)
    """The fixed part of the time a call takes to be answered (clock time)."""
    jitter: timedelta = timedelta(seconds=2)
    """Plus a random part, uniform between zero and this."""
    fail_rate: float = 0.05
    """Share of calls refused with ``failed`` (retryable)."""
    reject_rate: float = 0.01
    """Share of calls refused with ``rejected`` (final)."""
    repeat_window: timedelta = timedelta(minutes=3)
    """A second status change of a card within this is refused; zero: no window."""
    calls_per_second: float | None = None
    """Calls the carrier takes per second (clock time); None: no limit."""
    inventory_interval: timedelta | None = timedelta(minutes=1)
    """How often every known card's status is reported; None: never."""
    drift_rate: float = 0.0
    """Chance per idle card and inventory round that the carrier changes its status."""
    seed: int = 1
    refusals: Mapping[str, Refusal] = field(default_factory=dict)
    """Cards refused on purpose (demos and tests), by ICCID."""
    drift_cards: frozenset[str] = frozenset()
    """Cards whose status changed by a command does not stick: it flips once, at the next
    inventory round."""

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be between 0 and 1"
            for name in ("fail_rate", "reject_rate", "drift_rate")
            if not 0 <= getattr(self, name) <= 1
        ]
        if self.fail_rate + self.reject_rate > 1:
            problems.append("fail_rate + reject_rate must not exceed 1")
        for name in ("latency", "jitter", "repeat_window"):
            if getattr(self, name) < timedelta(0):
                problems.append(f"{name} must not be negative")
        if self.calls_per_second is not None and not self.calls_per_second > 0:
            problems.append("calls_per_second must be positive")
        if self.inventory_interval is not None and self.inventory_interval <= timedelta(0):
            problems.append("inventory_interval must be positive")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(slots=True)
class Card:
    iccid: str
    status: str = ACTIVE
    throttled: bool = False
    speed_kbps: int | None = None
    changed_at: datetime | None = None
    """When a command last changed the status (the repeat window counts from here)."""
    in_flight: int = 0
    refused: int = 0
    """Calls refused on purpose so far (``Refusal.times``)."""
    drifted: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    """A message for Kafka: ``topic`` is the logical topic, the key is the ICCID."""

    topic: str
    iccid: str
    value: dict[str, Any]
    tag: object = None
    """What the caller gave with the command this answers (its offset), else None."""
    note: str | None = None
    """A line for the log: every answer, and a drift on the carrier's side."""


class SimulatedCarrier:
    def __init__(self, options: CarrierOptions, now: datetime) -> None:
        self.options = options
        self.cards: dict[str, Card] = {}
        self.counts: Counter[str] = Counter()
        self._calls: list[tuple[datetime, int, Command, object]] = []
        self._order = itertools.count()
        self._free_at = now
        interval = options.inventory_interval
        self._next_round = now + interval if interval is not None else None
        self._round = 0

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    def receive(self, command: Command, now: datetime, tag: object = None) -> datetime:
        """Take a call; it is answered by ``step`` at the time returned."""
        card = self.cards.setdefault(command.iccid, Card(command.iccid))
        card.in_flight += 1
        start = now
        if self.options.calls_per_second is not None:
            start = max(now, self._free_at)  # a call waits for its turn
            self._free_at = start + timedelta(seconds=1 / self.options.calls_per_second)
        spread = self._chance("latency", command.command_id, command.attempt)
        due = start + self.options.latency + self.options.jitter * spread
        heapq.heappush(self._calls, (due, next(self._order), command, tag))
        return due

    def next_due(self) -> datetime | None:
        times = [t for t in (self._calls[0][0] if self._calls else None, self._next_round) if t is not None]
        return min(times, default=None)

    def step(self, now: datetime) -> list[Message]:
        """Everything due by ``now``, in time order: answers to calls, inventory rounds
        (at the same instant, answers first)."""
        messages: list[Message] = []
        while True:
            call = self._calls[0][0] if self._calls else None
            round_at = self._next_round
            if call is not None and call <= now and (round_at is None or call <= round_at):
                due, _, command, tag = heapq.heappop(self._calls)
                messages.append(self._answer(command, due, tag))
            elif round_at is not None and round_at <= now:
                messages += self._inventory(round_at)
                interval = self.options.inventory_interval
                assert interval is not None
                while round_at <= now:  # rounds missed while stalled are skipped
                    round_at += interval
                self._next_round = round_at
            else:
                return messages

    def _chance(self, *about: object) -> float:
        """A number in [0, 1) drawn from the seed and what it is about."""
        digest = hashlib.blake2b(repr((self.options.seed, *about)).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def _answer(self, command: Command, at: datetime, tag: object) -> Message:
        card = self.cards[command.iccid]
        card.in_flight -= 1
        outcome, detail = self._apply(command, card, at)
        self.counts[outcome] += 1
        value: dict[str, Any] = {
            # the same attempt answered twice (a redelivery) is the same result
            "result_id": derive_id("result", command.command_id, command.attempt),
            "command_id": command.command_id,
            "iccid": command.iccid,
            "outcome": outcome,
            "at": format_time(at),
            "detail": detail,
        }
        if outcome == APPLIED:
            # A refused call reads no status; the status dump (inventory) reports it.
            value["carrier_status"] = card.status
            value["throttled"] = card.throttled
        note = (
            f"{outcome} {command.action} {command.iccid} attempt {command.attempt} "
            f"({command.command_id}): {detail}"
        )
        return Message(COMMAND_RESULTS, command.iccid, value, tag, note)

    def _apply(self, command: Command, card: Card, at: datetime) -> tuple[str, str]:
        action = command.action
        if action not in ACTIONS:
            return REJECTED, f"unknown action {action!r}"
        if card.status == CANCELLED:
            if action == "cancel":
                return APPLIED, "already cancelled"
            return REJECTED, f"{action} refused: the number is cancelled, and a cancelled number stays so"
        refusal = self.options.refusals.get(card.iccid)
        if refusal is not None and (refusal.times is None or card.refused < refusal.times):
            card.refused += 1
            return refusal.outcome, f"{action} refused for this card (simulated: --refuse)"
        draw = self._chance("outcome", command.command_id, command.attempt)
        if draw < self.options.reject_rate:
            return REJECTED, f"{action} refused by the carrier (simulated rejection)"
        if draw < self.options.reject_rate + self.options.fail_rate:
            return FAILED, "the carrier is busy, try again later (simulated failure)"
        if action in TARGET:
            return self._change_status(card, TARGET[action], action, at)
        if action == "throttle":
            if command.speed_kbps is None or command.speed_kbps <= 0:
                return REJECTED, "throttle without a speed_kbps"
            was = card.throttled and card.speed_kbps == command.speed_kbps
            card.throttled, card.speed_kbps = True, command.speed_kbps
            return APPLIED, f"{'already ' if was else ''}throttled to {command.speed_kbps} kbps"
        was = not card.throttled
        card.throttled, card.speed_kbps = False, None
        return APPLIED, "already not throttled" if was else "unthrottled"

    def _change_status(self, card: Card, target: str, action: str, at: datetime) -> tuple[str, str]:
        if card.status == target:
            return APPLIED, f"already {target}"
        window = self.options.repeat_window
        if window and card.changed_at is not None and at < card.changed_at + window:
            return FAILED, (
                f"{action} refused: a second status change of this card within {_span(window)} "
                f"(last at {format_time(card.changed_at)}; allowed again from "
                f"{format_time(card.changed_at + window)})"
            )
        card.status, card.changed_at = target, at
        return APPLIED, PAST[action]

    def _inventory(self, at: datetime) -> list[Message]:
        self._round += 1
        messages = []
        for iccid in sorted(self.cards):
            card = self.cards[iccid]
            note = self._drift(card)
            value = {
                # the time in the id: a restarted carrier never repeats an earlier event id
                "event_id": derive_id("inventory", iccid, format_time(at)),
                "iccid": iccid,
                "status": card.status,
                "throttled": card.throttled,
                "at": format_time(at),
            }
            messages.append(Message(INVENTORY, iccid, value, note=note))
        self.counts["inventory"] += len(messages)
        return messages

    def _drift(self, card: Card) -> str | None:
        """The carrier changes an idle card's status on its own, now and then."""
        if card.status == CANCELLED or card.in_flight:
            return None
        forced = card.iccid in self.options.drift_cards and not card.drifted and card.changed_at is not None
        if not forced and self._chance("drift", card.iccid, self._round) >= self.options.drift_rate:
            return None
        card.drifted = True
        was = card.status
        card.status = ACTIVE if was == SUSPENDED else SUSPENDED
        self.counts["drift"] += 1
        how = "reactivated itself" if was == SUSPENDED else "was suspended by the carrier"
        return f"drift: {card.iccid} {how} ({was} -> {card.status})"


def _span(window: timedelta) -> str:
    seconds = window.total_seconds()
    if seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
