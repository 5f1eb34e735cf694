"""The verdict: the outcome read back (commands, and the SIMs' and pools' totals from the
table's changelog), judged against the fleet's ground truth, a sample checked through
the API, and the lines reported."""

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
from stream_app.domain.pools import PoolState, pool_from_dict
from stream_app.settings import Settings

from .crew import Crew, Stats
from .fleet import NEW, OLD, SHANGHAI, CommandKey, Fleet
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
    pool_totals_wrong: int = 0
    """Pool-months whose total differs from the sum of its members' records (R17)."""
    pool_rows_wrong: int = 0
    """Members whose row in their pool (what the pool holds they counted, which a
    recovered worker goes on from) differs from what they counted, or says not a member."""
    pool_commands: int = 0
    """Commands for reason pool the rules require (how much the pools were exercised)."""
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
        return not (
            self.lost
            or self.double_counted
            or self.missing_commands
            or self.conflicting_command_ids
            or self.pool_totals_wrong
            or self.pool_rows_wrong
        )

    def line(self) -> str:
        s = self.stats
        extra = [
            f"failovers={s.failovers}" if self.scenario.workers > 1 else "",
            f"broker_restarts={s.broker_restarts}" if self.scenario.broker_restarts else "",
            f"guarantee={self.scenario.guarantee}" if self.scenario.guarantee else "",
            f"crashes={s.crashes}",
            f"recovery_kills={s.recovery_kills}",
            f"pool_rows_wrong={self.pool_rows_wrong}",
            f"pool_commands={self.pool_commands}",
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
            f"conflicting_command_ids={self.conflicting_command_ids} "
            f"pool_totals_wrong={self.pool_totals_wrong} | " + " ".join(e for e in extra if e)
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
    result.pool_commands = sum(1 for key in required if key[2] == "pool")


@dataclass(slots=True)
class StoredPool:
    state: PoolState
    rows: dict[str, dict[str, Any]]
    """Each member's row: its own key, overridden by a row the pool's value still
    carries (written there first; codec.pool_entries)."""


def stored_pools(entries: dict[bytes, bytes]) -> dict[str, StoredPool]:
    """Every pool in the table's entries, as a replacement worker would load it."""
    values: dict[str, dict[str, Any]] = {}
    rows: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for key, raw in entries.items():
        if codec.is_pool_key(key) or codec.is_member_key(key):
            pool_id, iccid, value = codec.read_pool_index(key, raw)
            if iccid is None:
                values[pool_id] = value
            else:
                rows[pool_id][iccid] = value
    return {
        pool_id: StoredPool(pool_from_dict(value), {**rows[pool_id], **value.get("rows", {})})
        for pool_id, value in values.items()
    }


def judge_pools(fleet: Fleet, pools: dict[str, StoredPool], result: Result) -> None:
    """Each pool's monthly total against the sum of its members' records, and each
    member's row against what the member counted."""
    truth, counted = fleet.pool_truth(), fleet.truth()
    wrong: list[str] = []
    for plan in fleet.pools:
        stored = pools.get(plan.pool_id)
        for month in (OLD, NEW):
            expected = truth[plan.pool_id, month]
            usage = stored.state.months.get(month) if stored is not None else None
            got = usage.used if usage is not None else 0
            if got != expected:
                result.pool_totals_wrong += 1
                wrong.append(f"pool {plan.pool_id} {month}: truth {expected:,} counted {got:,}")
        for iccid in sorted(plan.members):
            row = stored.rows.get(iccid) if stored is not None else None
            said = {m: row["m"].get(m, 0) for m in (OLD, NEW)} if row is not None else {}
            should = {m: counted.get((iccid, m), 0) for m in (OLD, NEW)}
            if row is None or not row["in"] or said != should:
                result.pool_rows_wrong += 1
                wrong.append(f"pool {plan.pool_id} member {iccid}: row {row} counted {should}")
    result.examples += wrong[:5]


@dataclass(slots=True)
class Outcome:
    states: dict[str, SimState]
    commands: list[dict[str, Any]]
    pools: dict[str, StoredPool]


async def read_outcome(
    bootstrap: str, settings: Settings, fleet: Fleet, isolation: str, settle: float
) -> Outcome:
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
    present = {k: v for k, v in latest.items() if v is not None}
    return Outcome(codec.states_of(present, settings.policy()), commands, stored_pools(present))


def check_api(crew: Crew, states: dict[str, SimState], fleet: Fleet, sample: int, result: Result) -> None:
    """What a live worker serves for a sample of SIMs agrees with the changelog."""
    slot = next((s for s in crew.slots if s.ready()), None)
    if slot is None:
        return
    rng = random.Random(1)
    for iccid in rng.sample(sorted(fleet.quota), min(sample, len(fleet.quota))):
        body, why = slot.answer(f"/sims/{iccid}", timeout=10)
        result.api_checked += 1
        stored = states.get(iccid)
        expected = stored.months[NEW].used_bytes if stored is not None and NEW in stored.months else 0
        view = orjson.loads(body) if body else {}
        if view.get("month") != NEW or view.get("used_bytes") != expected:
            result.api_mismatch += 1
            if result.api_mismatch <= 3:  # enough to tell a wrong answer from no answer
                answer = (view.get("month"), view.get("used_bytes"))
                result.examples.append(
                    f"GET /sims/{iccid}: (month, used) {answer}, expected {expected} {why}"
                )
    truth = fleet.pool_truth()
    for plan in fleet.pools:  # GET /pools/{pool_id}: the month's total and the roster's size
        body = slot.get(f"/pools/{plan.pool_id}", timeout=10)
        result.api_checked += 1
        view = orjson.loads(body) if body else {}
        seen = (view.get("month"), view.get("used_bytes"), view.get("members"))
        if seen != (NEW, truth[plan.pool_id, NEW], len(plan.members)):
            result.api_mismatch += 1
            result.examples.append(f"GET /pools/{plan.pool_id}: (month, used, members) {seen}")


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
        f"conflicting_command_ids={total('conflicting_command_ids')} "
        f"pool_totals_wrong={total('pool_totals_wrong')}"
    )
