"""One scenario: its workers started, the subscriptions and then the usage of the two
phases produced under chaos (random kills, broker restarts), the clocks switched across
the month start between the phases, and the verdict."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from stream_app.settings import Settings
from stream_app.tools.admin import ensure_topics
from stream_app.tools.localbroker import LocalBroker

from ..conftest import simulated_clock, worker_env
from .crew import Crew, check_worker_import, worker_pythonpath
from .fleet import BOUNDARY, PHASE_A_NOW, Fleet, make_fleet
from .kafka import end_offsets, isolation_for, lag_by_partition, lagging, produce
from .verdict import Result, check_api, judge, judge_pools, read_outcome

MAX_STALL_RESTARTS = 2
"""Commit stalls per phase healed by restarting the workers; one more fails the run."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    records: int
    sims: int
    kills: int
    """Random kill -9s (the clock switch at the month start adds one per worker)."""
    workers: int = 1
    broker_restarts: int = 0
    partitions: int = 8
    seed: int = 7
    gap: tuple[float, float] = (2.0, 8.0)
    """Seconds between a worker being ready and its kill."""
    lead: float = 20.0
    """Seconds of wall time from the switch to the month start."""
    session_timeout: float = 10.0
    stall_after: float = 120.0
    """Seconds without a committed offset, once the chaos is over, that make a stall."""
    guarantee: str | None = None
    own_broker: bool = False
    """Start a broker of its own (required when it is restarted)."""
    store: str = "memory://"
    """The table store; with ``rocksdb://`` a killed worker restarts on its own data
    (the same folder, as a pod's volume), its persisted offsets and the changelog's tail."""
    race_join: bool = False
    """Reproduce the Faust input loss (docs/reliability.md): the second worker joins just
    as the first usage is produced, so a rebalance meets partitions with no committed
    offset while their first messages are being fetched. Otherwise nothing is produced
    until every worker is ready and the group has settled."""


async def restart_broker(broker: LocalBroker, crew: Crew, hard: bool, outage: tuple[float, float]) -> None:
    """Stop the broker (SIGTERM, or SIGKILL when ``hard``) and start it again on the same
    ports and data, while the worker goes on running."""
    pid = broker.pid()
    if hard and pid is not None:
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            await asyncio.to_thread(os.waitpid, pid, 0)
    await asyncio.to_thread(broker.stop)
    await asyncio.sleep(crew.rng.uniform(*outage))
    await asyncio.to_thread(broker.start, 120.0)
    crew.stats.broker_restarts += 1


async def run_phase(
    crew: Crew,
    scenario: Scenario,
    bootstrap: str,
    settings: Settings,
    ends: dict[int, int],
    kills: int,
    broker: LocalBroker | None,
    restarts: int,
    deadline: float,
    phase: int,
) -> str:
    """Chaos until its budget is spent and the group has committed every usage offset.
    Returns "" or why the phase did not finish."""
    failover = scenario.workers > 1

    async def chaos() -> None:
        # In phase B the changelog holds all of phase A: the longest recovery to cut.
        await crew.monkey(kills, scenario.gap, failover, recovering=phase == 1)
        for _ in range(restarts):
            await crew.wait_ready()
            await asyncio.sleep(crew.rng.uniform(*scenario.gap))
            assert broker is not None
            # every other restart is a SIGKILL, counted over the whole scenario
            await restart_broker(broker, crew, hard=crew.stats.broker_restarts % 2 == 1, outage=(1.0, 5.0))

    task = asyncio.create_task(chaos())
    try:
        stalled = await wait_committed(crew, scenario, bootstrap, settings, "usage", ends, task, deadline)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return stalled or await wait_pools(crew, scenario, bootstrap, settings, deadline)


async def wait_pools(
    crew: Crew, scenario: Scenario, bootstrap: str, settings: Settings, deadline: float
) -> str:
    """Until the pools have taken every report their members sent (which are all sent
    once the usage is committed), then the members every notice their pools sent: a
    phase's pool commands are then all decided within the phase's month. Returns "" or
    why not."""
    for logical in ("pool_usage", "pool_notices"):
        ends = await end_offsets(bootstrap, settings.topic(logical), scenario.partitions)
        stalled = await wait_committed(crew, scenario, bootstrap, settings, logical, ends, None, deadline)
        if stalled:
            return stalled
    return ""


async def wait_committed(
    crew: Crew,
    scenario: Scenario,
    bootstrap: str,
    settings: Settings,
    logical: str,
    ends: dict[int, int],
    chaos: asyncio.Task[None] | None,
    deadline: float,
) -> str:
    """Until the chaos is over, every worker is ready and the group has committed every
    offset of ``logical`` up to ``ends``. Returns "" or why not."""
    topic = settings.topic(logical)
    best, progress_at, stalls = None, time.monotonic(), 0
    while True:
        left = await lagging(bootstrap, settings.app_id, topic, ends)
        # A trickle is no progress: Faust can be stuck committing an offset every few seconds.
        if left is not None and (best is None or left <= best - 100 or left == 0):
            best, progress_at = left, time.monotonic()
        over = chaos is None or chaos.done()
        if chaos is not None and chaos.done() and chaos.exception() is not None:
            return f"chaos failed: {chaos.exception()!r}"
        if over and left == 0 and all(slot.ready() for slot in crew.slots if slot.worker is not None):
            return ""
        stuck = over and time.monotonic() - progress_at > scenario.stall_after
        if stuck and stalls < MAX_STALL_RESTARTS:
            # The Faust commit stall after a restart or rebalance (docs/reliability.md):
            # keep the evidence, then restart the workers as an operator would; a stall
            # that survives the restarts is reported as one.
            stalls += 1
            crew.stats.commit_stalls += 1
            lag = await lag_by_partition(bootstrap, settings.app_id, topic, ends)
            crew.stats.stall_evidence.append(f"{logical} uncommitted {lag}; see {crew.keep_evidence()}")
            for slot in crew.slots:
                await crew.kill(slot, failover=False, counted=False)
            best, progress_at = None, time.monotonic()
        elif stuck or time.monotonic() > deadline:
            return f"{left} {logical} messages not committed; see {crew.keep_evidence()}"
        await asyncio.sleep(1.0)


def scenario_env(scenario: Scenario, bootstrap: str) -> dict[str, str]:
    overrides = {
        "STREAM_APP_PARTITIONS": str(scenario.partitions),
        "STREAM_APP_STANDBY_REPLICAS": "1" if scenario.workers > 1 else "0",
        "STREAM_APP_FAUST_BROKER_SESSION_TIMEOUT": str(scenario.session_timeout),
        "STREAM_APP_FAUST_BROKER_HEARTBEAT_INTERVAL": str(max(scenario.session_timeout / 5, 1.0)),
        "PYTHONPATH": worker_pythonpath(),
        "STREAM_APP_STORE": scenario.store,
    }
    if scenario.guarantee:
        overrides["STREAM_APP_FAUST_PROCESSING_GUARANTEE"] = scenario.guarantee
    env = worker_env(bootstrap, **overrides)
    check_worker_import(env)
    return env


async def run_scenario(
    scenario: Scenario, bootstrap: str, workdir: Path, broker: LocalBroker | None = None
) -> Result:
    began = time.monotonic()
    fleet = make_fleet(scenario.records, scenario.sims, scenario.seed)
    env = scenario_env(scenario, bootstrap)
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    crew = Crew(
        env, workdir / scenario.name, scenario.workers, random.Random(scenario.seed), scenario.partitions
    )
    result = Result(scenario, crew.stats, fleet.records, scenario.sims)
    result.steps["setup"] = time.monotonic() - began
    deadline = time.monotonic() + 300 + scenario.records / 200
    watcher = asyncio.create_task(crew.watch())
    try:
        first = crew.slots[:1] if scenario.race_join else crew.slots
        for slot in first:
            slot.spawn(simulated_clock(PHASE_A_NOW, 1, time.time()))
        await crew.wait_ready(first)
        # The pools' definitions first: a pool then evaluates its members' usage at once
        # (without it, only unknown_pool); members' joins reach their pools meanwhile.
        for logical, items in (("pools", fleet.pool_definitions), ("subscriptions", fleet.subscriptions)):
            await produce(bootstrap, settings.topic(logical), items)
            ends = await end_offsets(bootstrap, settings.topic(logical), scenario.partitions)
            result.stalled = await wait_committed(
                crew, scenario, bootstrap, settings, logical, ends, None, deadline
            )
            if result.stalled:
                break
        result.step("subscriptions")
        if not result.stalled:
            await usage_phases(crew, scenario, fleet, bootstrap, settings, broker, result, deadline)
        outcome = await read_outcome(
            bootstrap, settings, fleet, isolation_for(scenario.guarantee), 5 if result.stalled else 90
        )
        states = outcome.states
        judge(fleet, states, outcome.commands, result)
        judge_pools(fleet, outcome.pools, result)
        if result.lost:
            # the other half of the evidence: whether the group committed past what it missed
            usage = settings.topic("usage")
            ends = await end_offsets(bootstrap, usage, scenario.partitions)
            lag = await lag_by_partition(bootstrap, settings.app_id, usage, ends)
            result.examples.append(f"  usage messages not committed at the end, by partition: {lag}")
        check_api(crew, states, fleet, 50, result)
        result.step("verdict")
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        crew.stop()
        result.errors = [line for slot in crew.slots for line in slot.errors()]
        result.seconds = time.monotonic() - began
    return result


async def usage_phases(
    crew: Crew,
    scenario: Scenario,
    fleet: Fleet,
    bootstrap: str,
    settings: Settings,
    broker: LocalBroker | None,
    result: Result,
    deadline: float,
) -> None:
    """Phase A under chaos, the clock switch across the month start, phase B under chaos."""
    # about 60 % of the kills in phase A, at least one in each phase when there are two
    kills_b = round(scenario.kills * 0.4) if scenario.kills >= 2 else 0
    restarts_a = math.ceil(scenario.broker_restarts / 2)
    budgets = ((scenario.kills - kills_b, restarts_a), (kills_b, scenario.broker_restarts - restarts_a))
    for phase, (records, (kills, restarts)) in enumerate(
        zip((fleet.before, fleet.after), budgets, strict=True)
    ):
        if phase == 1:
            # March was current for every record of phase A (its clock is far from the end)
            assert _clock_now(crew.slots[0].clock) < BOUNDARY - timedelta(minutes=10)
            await switch_clocks(crew, scenario)
            result.step("switch")
            while _clock_now(crew.slots[0].clock) < BOUNDARY + timedelta(seconds=3):
                await asyncio.sleep(0.5)
            result.step("to_month_start")
        joining = [slot for slot in crew.slots if slot.worker is None]
        for slot in joining:
            slot.spawn(crew.slots[0].clock)
        # race_join: produce the moment the newcomer has its partitions, while the first
        # worker is still recovering the ones it kept
        while not all(slot.worker is not None and slot.worker.is_ready() for slot in joining):
            await asyncio.sleep(0.05)
        if not joining:
            await crew.wait_ready()
        started = time.monotonic()
        fleet.place(
            records, await produce(bootstrap, settings.topic("usage"), ((u.iccid, u.value) for u in records))
        )
        ends = await end_offsets(bootstrap, settings.topic("usage"), scenario.partitions)
        result.stalled = await run_phase(
            crew, scenario, bootstrap, settings, ends, kills, broker, restarts, deadline, phase
        )
        result.processing_seconds += time.monotonic() - started
        result.step("march" if phase == 0 else "april")
        if result.stalled:
            return


def _clock_now(clock: dict[str, str]) -> datetime:
    start = datetime.fromisoformat(clock["STREAM_APP_CLOCK_START"].replace("Z", "+00:00"))
    elapsed = (time.time() - float(clock["STREAM_APP_CLOCK_ANCHOR"])) * float(clock["STREAM_APP_CLOCK_SPEED"])
    return start + timedelta(seconds=elapsed)


async def switch_clocks(crew: Crew, scenario: Scenario) -> None:
    """Kill every worker and restart it on a clock ``lead`` seconds before the month
    start, one at a time (with two workers each kill is a failover)."""
    # A restart's recovery grows with the changelog: leave time for every worker to be
    # back before 00:00, so that a running worker crosses it, not one catching up. Twice
    # the slowest start so far: the next one recovers a longer changelog, and after a
    # broker restart one start took longer than the slowest plus 8 s.
    slowest = max((t for slot in crew.slots for t in slot.start_seconds), default=0.0)
    lead = max(scenario.lead, scenario.workers * 2 * slowest + 10)
    clock = simulated_clock(BOUNDARY - timedelta(seconds=lead), 1, time.time())
    for n, slot in enumerate(crew.slots):
        slot.clock = clock
        await crew.kill(slot, scenario.workers > 1)
        await crew.wait_ready([slot])
        if n == 0:
            # the month start is then crossed by a running worker, not caught up at start-up
            crew.stats.boundary_crossed_live = _clock_now(clock) < BOUNDARY
