"""`stream-app replay`: the engine over JSON lines, without Kafka (docs/rules.md "Replay").

Input lines are ``{"topic": "<input topic>", "value": {...}}`` or ``{"tick": "<time>"}``.
Before a line is applied, now advances to the line's time (a usage record's ``end``,
``updated_at`` or ``at`` for the others, or the tick), never backwards, and everything
due on the way happens in time order, each at its own due instant. Output lines are
``{"topic": "<output topic>", "key": "<iccid>", "value": {...}}``. A bad line becomes a
dead letter whose ``offset`` is its line number (from 1), with partition 0.

Pools run in the same process: what a member reports reaches its pool at once, and what
a pool tells its members reaches them at once, members in ICCID order, all at the
moment of the line that caused it; a pool's own output lines are keyed by its pool id.
The messages between members and pools are the worker's internal topics, not output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

import orjson

from .. import collector
from ..domain import InvalidInput, Output, SimState, Subscription, UsageRecord, due_at, iccid_of
from ..domain.engine import Input, apply_pool_notice
from ..domain.fast import DUPLICATE, Lane, fast_usage, lane_of
from ..domain.inputs import Pool, PoolNotice, pool, pool_notice, usage_record
from ..domain.memory import id_hash
from ..domain.outputs import POOL_NOTICES, POOL_USAGE, dead_letter
from ..domain.pools import PoolState, Report, apply_pool, apply_report, new_pool, pool_due, pool_tick
from ..domain.timeutil import TimeFormatError, parse_time
from ..pipeline import Decision, Source, apply, decide_tick, rejected, validate
from ..schedule import DueIndex
from ..settings import Settings
from ..topics import INPUTS, POOLS, USAGE

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Replayer:
    """Holds every SIM's state in memory and applies lines in file order."""

    def __init__(self, settings: Settings, fast: bool = True) -> None:
        self.settings = settings
        self.policy = settings.policy()
        self.states: dict[str, SimState] = {}
        self.due = DueIndex()
        self.now: datetime | None = None
        self.fast = fast
        """Decide common usage records on the fast lane (off: every line takes the
        general engine; the outputs and states are the same, tests/unit/test_fast.py)."""
        self.fast_lane_records = 0
        """How many usage lines the fast lane decided."""
        self._lanes: dict[str, Lane | None] = {}
        """Each SIM's lane, derived after its last general step."""
        self.pools: dict[str, PoolState] = {}
        self._logical = {settings.topic(t): t for t in INPUTS}

    def line(self, number: int, raw: bytes) -> list[Output]:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return [self._bad(number, raw, "", "invalid_json", f"line is not JSON: {exc}")]
        if not isinstance(obj, dict):
            return [self._bad(number, raw, "", "not_an_object", "a line must be a JSON object")]
        if "tick" in obj:
            try:
                return self.advance(parse_time(obj["tick"]))
            except TimeFormatError as exc:
                return [self._bad(number, raw, "", "bad_time", f"tick: {exc}")]
        topic, value = obj.get("topic"), obj.get("value")
        logical = self._logical.get(topic) if isinstance(topic, str) else None
        if logical is None:
            return [
                self._bad(
                    number,
                    raw,
                    str(topic or ""),
                    "unknown_topic",
                    f"topic must be one of {', '.join(sorted(self._logical))}",
                )
            ]
        source = Source(str(topic), 0, number)
        try:
            item = self._validate(logical, value, len(raw))
        except InvalidInput as exc:
            # An invalid line does not move now: its times cannot be trusted.
            return rejected(source, raw, None, exc.code, exc.detail, "invalid").outputs
        emitted = self.advance(_time_of(item))
        now = self.now or _EPOCH
        if isinstance(item, Pool):
            state = self.pools.get(item.pool_id) or new_pool(item.pool_id, now, self.policy)
            return emitted + self._pool_outputs(state, apply_pool(state, item, now, self.policy).outputs, now)
        if self.fast and isinstance(item, UsageRecord) and self._fast(item, now):
            return emitted
        decision = apply(item, source, raw, self.states.get, now, self.policy)
        self._keep(decision)
        return emitted + self._route(decision.outputs, now)

    def _route(self, outputs: list[Output], now: datetime) -> list[Output]:
        """Outputs for the output topics; reports reach their pool at once, and what the
        pool says reaches its members at once (R17-R19)."""
        emitted: list[Output] = []
        for output in outputs:
            if output.topic != POOL_USAGE:
                emitted.append(output)
                continue
            value = output.value
            state = self.pools.get(value["pool_id"]) or new_pool(value["pool_id"], now, self.policy)
            report = Report(
                value["pool_id"], value["iccid"], value["kind"], value["month"], value["used"], value["cause"]
            )
            emitted += self._pool_outputs(state, apply_report(state, report, now, self.policy).outputs, now)
        return emitted

    def _pool_outputs(self, state: PoolState, outputs: list[Output], now: datetime) -> list[Output]:
        self.pools[state.pool_id] = state
        self.due.schedule(_POOL + state.pool_id, pool_due(state, self.policy).timestamp())
        emitted: list[Output] = []
        for output in outputs:
            if output.topic != POOL_NOTICES:
                emitted.append(output)
                continue
            notice = pool_notice(output.value)
            member = self.states.get(notice.iccid)
            if member is None:
                continue
            step = apply_pool_notice(member, notice, now, self.policy)
            self._keep(Decision(notice.iccid, step.state, step.outputs, step.outcome))
            emitted += self._route(step.outputs, now)
        return emitted

    def _fast(self, record: UsageRecord, now: datetime) -> bool:
        """Count a common record on the SIM's fast lane; False: take the general path."""
        state = self.states.get(record.iccid)
        if state is None:
            return False
        iccid = record.iccid
        lane = (
            self._lanes[iccid]
            if iccid in self._lanes
            else self._lanes.setdefault(iccid, lane_of(state, self.policy))
        )
        if lane is None:
            return False
        usage = state.months.get(state.month)
        used = fast_usage(
            lane,
            usage.used_bytes if usage is not None else 0,
            state.ids,
            id_hash(record.record_id),
            record.start.timestamp(),
            record.end.timestamp(),
            record.total_bytes,
            now.timestamp(),
            self.policy,
        )
        if used is None:
            return False
        if used != DUPLICATE:
            state.usage(state.month).used_bytes = used
        self.fast_lane_records += 1
        return True

    def _validate(self, logical: str, value: Any, line_bytes: int) -> Input | Pool:
        """The message of a line, validated as the worker would; the line is parsed once
        (its size is measured on the value only when the whole line is near the limit)."""
        limit = self.settings.max_message_bytes
        if line_bytes > limit and len(orjson.dumps(value)) > limit:
            raise InvalidInput("too_large", f"message is over the {limit} bytes limit")
        if not isinstance(value, dict):
            raise InvalidInput("not_an_object", "a message must be a JSON object")
        if logical == POOLS:
            return pool(value)
        if logical == USAGE:
            with contextlib.suppress(InvalidInput):
                return usage_record(value)  # the common case, at once
        iccid_of(value)  # first, as live: a bad ICCID is reported before any other field
        return validate(logical, value)

    def advance(self, until: datetime | None) -> list[Output]:
        """Move now forward to ``until``, running what falls due on the way in time order."""
        if until is None or (self.now is not None and until <= self.now):
            return []
        emitted: list[Output] = []
        for due, key in self.due.pop_due(until.timestamp()):
            at = datetime.fromtimestamp(due, UTC)
            if key.startswith(_POOL):
                state = self.pools[key[len(_POOL) :]]
                emitted += self._pool_outputs(state, pool_tick(state, at, self.policy).outputs, at)
                continue
            decision = decide_tick(self.states[key], at, self.policy)
            self._keep(decision)
            emitted += self._route(decision.outputs, at)
        self.now = until
        return emitted

    def _keep(self, decision: Decision) -> None:
        if decision.state is not None and decision.iccid is not None:
            self.states[decision.iccid] = decision.state
            self.due.schedule(decision.iccid, due_at(decision.state, self.policy).timestamp())
            self._lanes.pop(decision.iccid, None)

    def _bad(self, number: int, raw: bytes, topic: str, error: str, detail: str) -> Output:
        return dead_letter(topic, 0, number, error, detail, raw)

    def encode(self, output: Output) -> bytes:
        return orjson.dumps(
            {"topic": self.settings.topic(output.topic), "key": output.key, "value": output.value}
        )


_POOL = "pool:"
"""Due-index keys of pools (an ICCID never starts so)."""


def _time_of(item: Input | Pool) -> datetime:
    """A line's time: a usage record's end, a subscription's or pool's updated_at, or its at."""
    if isinstance(item, UsageRecord):
        return item.end
    if isinstance(item, Subscription | Pool):
        return item.updated_at
    if isinstance(item, PoolNotice):
        raise TypeError("a pool notice is not a replay line")
    return item.at


def replay_lines(settings: Settings, lines: Iterable[bytes]) -> Iterator[bytes]:
    """Encoded output lines for the input lines, in order (blank lines are skipped)."""
    replayer = Replayer(settings)
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            for output in replayer.line(number, raw.rstrip(b"\r\n")):
                yield replayer.encode(output)


def run(settings: Settings, source: BinaryIO, sink: BinaryIO) -> None:
    collector.tune()  # replay holds every SIM's state: full collections would walk them all
    for encoded in replay_lines(settings, source):
        sink.write(encoded + b"\n")
    sink.flush()
