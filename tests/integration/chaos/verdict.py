"""The verdict: the outcome read back (commands, and totals from the table's
changelog), judged against the fleet's ground truth, a sample checked through the API,
and the lines reported."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from stream_app import codec
from stream_app.domain import SimState
from stream_app.domain.memory import IdMemory, id_hash
from stream_app.settings import Settings

from .crew import Crew, Stats
from .fleet import NEW, SHANGHAI, CommandKey, Fleet
from .kafka import TopicReader

if TYPE_CHECKING:
    # only for annotations: scenario.py imports this module
    from .scenario import Scenario

TABLE_CHANGELOG = "{app_id}-sims-changelog"


@dataclass(slots=True)
class Result:
    scenario: Scenario
    stats: Stats
    records: int
    sims: int
    lost: int = 0
    double_counted: int = 0
    missing_commands: int = 0
    conflicting_command_ids: int = 0
    unexpected_commands: int = 0
    commands: int = 0
    repeated_commands: int = 0
    lost_bytes: int = 0
    extra_bytes: int = 0
    api_checked: int = 0
    api_mismatch: int = 0
    stalled: str = ""
    seconds: float = 0.0
    processing_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)
    """Wall seconds per step, to see where a run's time goes."""
    _last: float = field(default_factory=time.monotonic)

    def step(self, name: str) -> None:
        now = time.monotonic()
        self.steps[name] = now - self._last
        self._last = now

    @property
    def ok(self) -> bool:
        return not (self.lost or self.double_counted or self.missing_commands or self.conflicting_command_ids)

    def line(self) -> str:
        s = self.stats
        extra = [
            f"failovers={s.failovers}" if self.scenario.workers > 1 else "",
            f"broker_restarts={s.broker_restarts}" if self.scenario.broker_restarts else "",
            f"guarantee={self.scenario.guarantee}" if self.scenario.guarantee else "",
            f"crashes={s.crashes}",
            f"recovery_kills={s.recovery_kills}",
            f"commit_stalls={s.commit_stalls}" if s.commit_stalls else "",
            f"unexpected_commands={self.unexpected_commands}",
            f"repeated_commands={self.repeated_commands}/{self.commands}",
            f"api_mismatch={self.api_mismatch}/{self.api_checked}",
            f"month_start_live={'yes' if s.boundary_crossed_live else 'no'}",
            f"error_log_lines={len(self.errors)}",
            f"stalled={self.stalled!r}" if self.stalled else "",
            f"{self.records / self.processing_seconds:,.0f} records/s" if self.processing_seconds else "",
            f"{self.seconds:.0f} s ({' '.join(f'{k} {v:.0f}' for k, v in self.steps.items())})",
        ]
        return (
            f"chaos[{self.scenario.name}]: kills={s.kills} records={self.records} sims={self.sims} "
            f"lost={self.lost} double_counted={self.double_counted} "
            f"missing_commands={self.missing_commands} "
            f"conflicting_command_ids={self.conflicting_command_ids} | " + " ".join(e for e in extra if e)
        )


def logical(command: dict[str, Any]) -> CommandKey:
    """What makes a command the same command, whenever it was decided (see the package docstring)."""
    at = datetime.fromisoformat(command["at"].replace("Z", "+00:00")).astimezone(SHANGHAI)
    return (command["iccid"], command["action"], command["reason"], command["trigger"], at.strftime("%Y-%m"))


def uncounted(fleet: Fleet, states: dict[str, SimState], iccid: str, month: str) -> list[str]:
    """Where the records a SIM-month misses were on the usage topic: the evidence of a loss."""
    state = states.get(iccid)
    ids = state.ids if state is not None else IdMemory()
    missing = {
        u.record_id: fleet.placed.get((u.iccid, u.record_id), [])
        for u in [*fleet.before, *fleet.after]
        if u.iccid == iccid and u.month == month and id_hash(u.record_id) not in ids
    }
    return [
        f"  never counted: {record_id} at usage (partition, offset) {where}"
        for record_id, where in missing.items()
    ][:5]


def judge(fleet: Fleet, states: dict[str, SimState], commands: list[dict[str, Any]], result: Result) -> None:
    """Fill ``result`` with the comparison of the worker's state and commands with the truth."""
    truth = fleet.truth()
    counted = {
        (iccid, month): usage.used_bytes
        for iccid, state in states.items()
        for month, usage in state.months.items()
    }
    for key in set(truth) | set(counted):
        expected, got = truth.get(key, 0), counted.get(key, 0)
        if expected > got:
            result.lost += 1
            result.lost_bytes += expected - got
        elif got > expected:
            result.double_counted += 1
            result.extra_bytes += got - expected
        if expected != got and len(result.examples) < 5:
            result.examples.append(f"{key[0]} {key[1]}: truth {expected:,} counted {got:,}")
            if expected > got:
                result.examples += uncounted(fleet, states, *key)
    ids: dict[CommandKey, set[str]] = defaultdict(set)
    for command in commands:
        ids[logical(command)].add(command["command_id"])
    required = fleet.required_commands()
    missing = required - set(ids)
    unexpected = set(ids) - required
    result.missing_commands = len(missing)
    result.unexpected_commands = len(unexpected)
    result.conflicting_command_ids = sum(1 for found in ids.values() if len(found) > 1)
    result.commands = len(commands)
    result.repeated_commands = len(commands) - sum(len(found) for found in ids.values())
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        result.examples += [f"{label} command {' '.join(k)}" for k in sorted(keys)[:3]]
    conflicts = [f"conflicting ids {' '.join(k)}: {sorted(v)}" for k, v in ids.items() if len(v) > 1]
    result.examples += conflicts[:3]


async def read_outcome(
    bootstrap: str, settings: Settings, fleet: Fleet, isolation: str, settle: float
) -> tuple[dict[str, SimState], list[dict[str, Any]]]:
    """The commands (waiting up to ``settle`` s for the required ones), then the state."""
    required = fleet.required_commands()
    async with TopicReader(bootstrap, settings.topic("commands"), settings.partitions, isolation) as reader:
        deadline = time.monotonic() + settle
        while True:
            commands = [orjson.loads(value) for _key, value in await reader.catch_up() if value is not None]
            if required <= {logical(c) for c in commands} or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
    changelog = TABLE_CHANGELOG.format(app_id=settings.app_id)
    latest: dict[bytes, bytes | None] = {}
    async with TopicReader(bootstrap, changelog, settings.partitions, isolation) as reader:
        for key, value in await reader.catch_up(timeout=300):
            if key is not None:
                latest[key] = value
    states = codec.states_of({k: v for k, v in latest.items() if v is not None}, settings.policy())
    return states, commands


def check_api(crew: Crew, states: dict[str, SimState], fleet: Fleet, sample: int, result: Result) -> None:
    """What a live worker serves for a sample of SIMs agrees with the changelog."""
    slot = next((s for s in crew.slots if s.ready()), None)
    if slot is None:
        return
    rng = random.Random(1)
    for iccid in rng.sample(sorted(fleet.quota), min(sample, len(fleet.quota))):
        body = slot.get(f"/sims/{iccid}", timeout=10)
        result.api_checked += 1
        stored = states.get(iccid)
        expected = stored.months[NEW].used_bytes if stored is not None and NEW in stored.months else 0
        view = orjson.loads(body) if body else {}
        if view.get("month") != NEW or view.get("used_bytes") != expected:
            result.api_mismatch += 1


def report(result: Result) -> None:
    print(result.line(), flush=True)
    for example in result.examples:
        print(f"  {example}")
    if result.stalled:
        print(f"  stalled: {result.stalled}")
    distinct = Counter(re.sub(r"^\[[^]]*\] \[\d+\] ", "", line)[:160] for line in result.errors)
    for line, count in distinct.most_common(5):
        print(f"  log x{count}: {line}")
    for evidence in result.stats.stall_evidence:
        print(f"  commit stall: {evidence}")
    for crash in result.stats.crash_logs[:2]:
        print("  " + crash[-1500:].replace("\n", "\n    "))


def summary(results: Sequence[Result]) -> str:
    def total(name: str) -> int:
        return sum(int(getattr(r, name)) for r in results)

    return (
        f"chaos: kills={sum(r.stats.kills for r in results)} records={total('records')} "
        f"sims={total('sims')} lost={total('lost')} double_counted={total('double_counted')} "
        f"missing_commands={total('missing_commands')} "
        f"conflicting_command_ids={total('conflicting_command_ids')}"
    )
