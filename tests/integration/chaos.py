"""Chaos harness (issue #7): the real worker killed with SIGKILL, failed over and cut off
from a restarted broker, then every SIM's monthly totals and the commands checked
against a ground truth computed from what was produced.

    python -m tests.integration.chaos [--scenarios single,failover,broker] [--records 200000]
        [--sims 10000] [--kills 10] [--processing-guarantee exactly_once]

``make chaos`` runs the three scenarios at full size; tests/integration/test_chaos.py
runs short versions of them inside ``make test``.

How the ground truth stays exact while kills and restarts land at random moments:

* A fleet of SIMs gets its subscriptions first; usage is produced only once the
  consumer group has committed every subscription offset (the two topics are consumed
  independently, so usage produced earlier could be counted against no plan).
* Usage comes in two phases around the month start B (00:00 1 April, Shanghai).
  Phase A (records of March) is processed by workers whose simulated clock stands two
  hours before B, so every March record is counted while March is the current month,
  whatever the kills cost in wall time: each auto-suspend SIM whose March total reaches
  its quota must get suspend/quota for March (R4). Once phase A is committed, the
  workers are killed and restarted on a clock a little before B, so a running worker
  crosses the month start itself; every SIM suspended in March must then be restored
  at B (R6: quota was its only reason and April starts empty). Only once that clock is
  past B comes phase B: late March records (counted for March, never suspending, R3),
  April records (suspend/quota for April when an auto-suspend SIM reaches its quota)
  and repeats of records of both phases (R2: never counted twice).
* Totals are read from the table's changelog (the last value per key, decoded with
  stream_app.codec), not from GET /sims/{iccid}: the API shows only the current month,
  while the changelog holds every month, and it is exactly what a replacement worker
  recovers from. A sample of SIMs is also read through the API of a live worker, to
  check that what it serves agrees with the changelog.
* A command is identified logically by (iccid, action, reason, trigger, month of
  ``at`` in Shanghai): a repeat after a crash may carry another ``at`` (the time it was
  decided again) but must carry the same command_id (derived from the cause and the
  month); two ids for one logical command are conflicting.

* "Processed and committed everything" is the consumer group's committed offsets
  reaching the end of the topic. Faust sometimes stops committing a partition after a
  restart or rebalance (README, Reliability); after ``stall_after`` seconds without
  progress the harness keeps the evidence and restarts the workers, as an operator
  would, at most twice per wait; the stalls are counted in the scenario's line.

The last line printed is
``chaos: kills=K records=R sims=S lost=0 double_counted=0 missing_commands=0 conflicting_command_ids=0``
and the exit status is 1 if any of the last four is not zero, 2 if they are but a
scenario could not finish (its line says why).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream_app import codec
from stream_app.admin import ensure_topics
from stream_app.domain import SimState
from stream_app.localbroker import LocalBroker, free_port
from stream_app.settings import Settings

from .conftest import ROOT, WorkerProcess, simulated_clock, worker_env

SHANGHAI = ZoneInfo("Asia/Shanghai")
BOUNDARY = datetime(2026, 4, 1, tzinfo=SHANGHAI).astimezone(UTC)
OLD, NEW = "2026-03", "2026-04"
PHASE_A_NOW = BOUNDARY - timedelta(hours=2)
"""Phase A's clock: March records are all counted long before the month ends."""
MAX_STALL_RESTARTS = 2
"""Commit stalls per phase healed by restarting the workers; one more fails the run."""
REPEAT_SHARE = 0.04
"""Share of usage messages that repeat an earlier record exactly (same record_id)."""
TABLE_CHANGELOG = "{app_id}-sims-changelog"
CommandKey = tuple[str, str, str, str, str]
"""(iccid, action, reason, trigger, month in Shanghai)"""


# --- the fleet and its ground truth -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    iccid: str
    record_id: str
    month: str
    """Known by construction (the start was drawn inside this month), not computed by stream_app."""
    total: int
    value: bytes


@dataclass(slots=True)
class Fleet:
    subscriptions: list[tuple[str, bytes]]
    quota: dict[str, int]
    auto_suspend: dict[str, bool]
    before: list[Usage]
    """Phase A: March records, produced while the workers' clock is in March."""
    after: list[Usage]
    """Phase B: late March records, April records and repeats, produced after B."""
    placed: dict[tuple[str, str], list[tuple[int, int]]] = field(default_factory=dict)
    """(iccid, record_id) -> where each copy landed on the usage topic (partition, offset)."""

    def place(self, records: Sequence[Usage], placed: Sequence[tuple[int, int]]) -> None:
        for usage, where in zip(records, placed, strict=True):
            self.placed.setdefault((usage.iccid, usage.record_id), []).append(where)

    @property
    def records(self) -> int:
        return len(self.before) + len(self.after)

    def totals(self, records: Iterable[Usage]) -> dict[tuple[str, str], int]:
        """Bytes per (iccid, month), each record id counted once per SIM (R2)."""
        seen: set[tuple[str, str]] = set()
        totals: dict[tuple[str, str], int] = defaultdict(int)
        for usage in records:
            if (usage.iccid, usage.record_id) not in seen:
                seen.add((usage.iccid, usage.record_id))
                totals[usage.iccid, usage.month] += usage.total
        return totals

    def truth(self) -> dict[tuple[str, str], int]:
        return self.totals([*self.before, *self.after])

    def required_commands(self) -> set[CommandKey]:
        """The commands the rules require, as (iccid, action, reason, trigger, month).

        Sound because every March record of phase A is counted while March is current
        (R4: suspend when the March total reaches the quota), no April record exists
        before B (R6: the month start finds April empty and restores), late March
        records never suspend (R3), and April's records are all counted in April.
        """
        before = self.totals(self.before)
        everything = self.truth()
        required: set[CommandKey] = set()
        for iccid, quota in self.quota.items():
            if not self.auto_suspend[iccid]:
                continue
            if before.get((iccid, OLD), 0) >= quota:
                required.add((iccid, "suspend", "quota", "usage", OLD))
                required.add((iccid, "restore", "quota", "month_start", NEW))
            if everything.get((iccid, NEW), 0) >= quota:
                required.add((iccid, "suspend", "quota", "usage", NEW))
        return required


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_fleet(records: int, sims: int, seed: int) -> Fleet:
    """``records`` usage messages over ``sims`` SIMs, with known totals per month.

    Quotas are drawn around each SIM's March volume so that about half the SIMs reach
    it in March, and April records are larger so that a good share reach it again.
    """
    rng = random.Random(seed)
    iccids = [f"898600{n:014d}" for n in range(sims)]
    distinct = round(records / (1 + REPEAT_SHARE))
    in_march = round(distinct * 0.7)
    late = round(distinct * 0.1)
    counter = iter(range(10**9))

    def usage(iccid: str, start: datetime, duration: int, total: int, month: str) -> Usage:
        record_id = f"cdr-{next(counter)}"
        up = total // 5
        value = orjson.dumps(
            {
                "record_id": record_id,
                "iccid": iccid,
                "carrier": rng.choice(("cmcc", "cucc", "ctcc")),
                "start": _iso(start),
                "end": _iso(start + timedelta(seconds=duration)),
                "bytes_up": up,
                "bytes_down": total - up,
            }
        )
        return Usage(iccid, record_id, month, total, value)

    march_start = BOUNDARY - timedelta(days=3)
    march_span = (PHASE_A_NOW - march_start).total_seconds() - 1800
    before = [
        usage(
            rng.choice(iccids),
            march_start + timedelta(seconds=rng.uniform(0, march_span)),
            rng.randint(60, 600),
            rng.randint(200_000, 5_000_000),
            OLD,
        )
        for _ in range(in_march)
    ]
    late_records = [
        usage(
            rng.choice(iccids),
            BOUNDARY - timedelta(seconds=rng.uniform(300, 86_400)),
            rng.randint(60, 240),
            rng.randint(200_000, 5_000_000),
            OLD,
        )
        for _ in range(late)
    ]
    # April records start within 10 minutes of B and end at most 14 minutes after it:
    # produced once the clock is past B, they are never beyond the 15-minute skew (R15).
    april = [
        usage(
            rng.choice(iccids),
            BOUNDARY + timedelta(seconds=rng.uniform(0, 600)),
            rng.randint(60, 240),
            rng.randint(600_000, 15_000_000),
            NEW,
        )
        for _ in range(distinct - in_march - late)
    ]
    march_totals: dict[str, int] = defaultdict(int)
    for item in before:
        march_totals[item.iccid] += item.total
    quota = {
        iccid: max(1_000_000, round(march_totals[iccid] * rng.uniform(0.6, 1.5)))
        if march_totals[iccid]
        else rng.randint(1_000_000, 50_000_000)
        for iccid in iccids
    }
    auto_suspend = {iccid: rng.random() < 0.8 for iccid in iccids}
    subscriptions = [
        (
            iccid,
            orjson.dumps(
                {
                    "iccid": iccid,
                    "plan_id": "chaos",
                    "quota_bytes": quota[iccid],
                    "valid_from": "2026-01-01T00:00:00+08:00",
                    "expires_at": None,
                    "auto_suspend": auto_suspend[iccid],
                    "updated_at": _iso(BOUNDARY - timedelta(days=10)),
                }
            ),
        )
        for iccid in iccids
    ]
    # Exact repeats: half within phase A, a quarter within phase B, a quarter are March
    # records of phase A sent again after the month start.
    repeats = records - distinct
    after = late_records + april
    before_repeats = [rng.choice(before) for _ in range(repeats // 2)]
    after_repeats = [rng.choice(after) for _ in range(repeats // 4)]
    cross_repeats = [rng.choice(before) for _ in range(repeats - len(before_repeats) - len(after_repeats))]
    before = before + before_repeats
    after = after + after_repeats + cross_repeats
    rng.shuffle(before)  # out of time order, as carriers' feeds are
    rng.shuffle(after)
    return Fleet(subscriptions, quota, auto_suspend, before, after)


# --- Kafka helpers --------------------------------------------------------------------------


async def produce(bootstrap: str, topic: str, items: Iterable[tuple[str, bytes]]) -> list[tuple[int, int]]:
    """Send in order; returns each message's (partition, offset)."""
    # Idempotent: a retried send must not add a message the ground truth does not know.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    placed: list[tuple[int, int]] = []
    pending = []
    try:
        for key, value in items:
            pending.append(await producer.send(topic, value, key=key.encode()))
            if len(pending) >= 10_000:
                placed += [(m.partition, m.offset) for m in await asyncio.gather(*pending)]
                pending = []
        placed += [(m.partition, m.offset) for m in await asyncio.gather(*pending)]
    finally:
        await producer.stop()
    return placed


async def _admin_call(bootstrap: str, call: Callable[[AIOKafkaAdminClient], Awaitable[Any]]) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        return await call(admin)
    finally:
        await admin.close()


async def lag_by_partition(
    bootstrap: str, group: str, topic: str, ends: dict[int, int]
) -> dict[int, int] | None:
    """Messages of ``topic`` not yet committed by ``group``, per partition (None: no answer)."""
    try:
        offsets = await _admin_call(bootstrap, lambda admin: admin.list_consumer_group_offsets(group))
    except Exception:
        return None
    done = {tp.partition: int(meta.offset) for tp, meta in offsets.items() if tp.topic == topic}
    return {p: max(end - max(done.get(p, 0), 0), 0) for p, end in ends.items()}


async def lagging(bootstrap: str, group: str, topic: str, ends: dict[int, int]) -> int | None:
    lag = await lag_by_partition(bootstrap, group, topic, ends)
    return None if lag is None else sum(lag.values())


class TopicReader:
    """Reads a whole topic from the beginning, then whatever came since, on each call."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, isolation: str) -> None:
        self.topic = topic
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            isolation_level=isolation,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.messages: list[tuple[bytes | None, bytes | None]] = []

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_beginning(*self.partitions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def catch_up(self, timeout: float = 120.0) -> list[tuple[bytes | None, bytes | None]]:
        ends = await self.consumer.end_offsets(self.partitions)
        deadline = time.monotonic() + timeout
        while not await self._reached(ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {self.topic} to its end")
            for batch in (await self.consumer.getmany(timeout_ms=500, max_records=50_000)).values():
                self.messages += [(m.key, m.value) for m in batch]
        return self.messages

    async def _reached(self, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await self.consumer.position(tp) < end:
                return False
        return True


# --- the workers ------------------------------------------------------------------------------


@dataclass(slots=True)
class Stats:
    kills: int = 0
    failovers: int = 0
    crashes: int = 0
    """Worker exits nobody asked for; the worker is restarted, like a pod would be."""
    broker_restarts: int = 0
    commit_stalls: int = 0
    """Times the group stopped committing with work left, and the workers were restarted."""
    boundary_crossed_live: bool = False
    crash_logs: list[str] = field(default_factory=list)
    stall_evidence: list[str] = field(default_factory=list)


class Slot:
    """One worker's place (a pod): same web port and data folder across restarts."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.env = {**env, "STREAM_APP_WEB_PORT": str(free_port())}
        self.data_dir = workdir / name
        self.clock: dict[str, str] = {}
        self.worker: WorkerProcess | None = None
        self.history: list[WorkerProcess] = []
        self.spawned_at = 0.0
        self.start_seconds: list[float] = []
        """How long each incarnation took from spawn to ready (recovery grows with the table)."""
        self.timed: WorkerProcess | None = None
        self.busy = False
        """Being killed or restarted on purpose: the crash watcher leaves it alone."""

    def spawn(self, clock: dict[str, str] | None = None) -> None:
        if clock is not None:
            self.clock = clock
        self.worker = WorkerProcess({**self.env, **self.clock}, self.data_dir)
        self.history.append(self.worker)
        self.worker.spawn()
        self.spawned_at = time.monotonic()

    def alive(self) -> bool:
        return self.worker is not None and self.worker.alive()

    def ready(self) -> bool:
        """Started, owning partitions, recovered and not rebalancing (/readyz), not merely
        past its first "Ready": input produced during a rebalance's recovery is where
        Faust loses messages (README, Reliability), and the harness must not be the cause."""
        if self.worker is None or not self.worker.alive() or not self.worker.is_ready():
            return False
        if self.get("/readyz", timeout=2) is None:
            return False
        if self.timed is not self.worker:
            self.timed = self.worker
            self.start_seconds.append(time.monotonic() - self.spawned_at)
        return True

    def kill(self) -> bool:
        """SIGKILL; True if a live process was killed."""
        if self.worker is None or not self.worker.alive():
            return False
        self.worker.kill()
        return True

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    def get(self, path: str, timeout: float = 5.0) -> bytes | None:
        try:
            url = f"http://127.0.0.1:{self.env['STREAM_APP_WEB_PORT']}{path}"
            with urllib.request.urlopen(url, timeout=timeout) as response:
                body: bytes = response.read()
                return body
        except OSError:
            return None

    def owned(self) -> int:
        """Usage partitions this worker actively owns (its own gauge; 0 when unknown)."""
        body = self.get("/metrics") if self.ready() else None
        found = re.search(rb"^stream_app_owned_partitions (\S+)$", body or b"", re.M)
        return int(float(found.group(1))) if found else 0

    def errors(self) -> list[str]:
        lines: list[str] = []
        for worker in self.history:
            text = worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""
            lines += [line for line in text.splitlines() if "[ERROR]" in line or "Traceback" in line]
        return lines


class Crew:
    """The scenario's workers, the chaos done to them, and the crash watcher."""

    def __init__(
        self, env: dict[str, str], workdir: Path, size: int, rng: random.Random, partitions: int
    ) -> None:
        self.slots = [Slot(f"worker-{n}", env, workdir) for n in range(size)]
        self.rng = rng
        self.partitions = partitions
        self.stats = Stats()

    async def wait_ready(self, slots: Sequence[Slot] | None = None, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        # all at once: one joining puts the others back into a rebalance
        while not all(slot.ready() for slot in slots or self.slots):
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not ready in {timeout} s")
            await asyncio.sleep(0.3)

    async def watch(self) -> None:
        """Restart a worker that exited on its own (counted as a crash, log kept)."""
        while True:
            await asyncio.sleep(0.5)
            for slot in self.slots:
                if slot.busy or slot.worker is None or slot.alive():
                    continue
                self.stats.crashes += 1
                self.stats.crash_logs.append(f"{slot.name} exited:\n{slot.worker.log()[-3000:]}")
                if self.stats.crashes > 30:
                    continue  # a crash loop: leave it down; the phase deadline reports it
                slot.spawn()

    async def kill(
        self, slot: Slot, failover: bool, outage: tuple[float, float] = (0.0, 0.0), counted: bool = True
    ) -> None:
        """kill -9 one worker; with a survivor, wait until it owns every partition
        (the dead member leaves the group after the session timeout); then restart it."""
        slot.busy = True
        try:
            owned = slot.owned()
            if slot.kill() and counted:
                self.stats.kills += 1
            survivors = [s for s in self.slots if s is not slot and s.alive()]
            if failover and survivors and owned:
                deadline = time.monotonic() + 120
                while not any(s.owned() == self.partitions for s in survivors):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the survivor never took over every partition")
                    await asyncio.sleep(0.5)
                self.stats.failovers += 1
            await asyncio.sleep(self.rng.uniform(*outage))
            slot.spawn()
        finally:
            slot.busy = False

    async def monkey(self, kills: int, gap: tuple[float, float], failover: bool) -> None:
        """``kills`` kill -9s at random moments: mostly a while after the victim is
        ready (mid-batch, mid-commit), sometimes during its start-up and recovery."""
        for _ in range(kills):
            fresh = [s for s in self.slots if s.alive() and not s.ready()]
            if fresh and self.rng.random() < 0.25:
                victim = self.rng.choice(fresh)
                await asyncio.sleep(max(0.0, victim.spawned_at + self.rng.uniform(0.5, 6) - time.monotonic()))
            else:
                await self.wait_ready()
                await asyncio.sleep(self.rng.uniform(*gap))
                victim = self.rng.choice(self.slots)
            # with two workers, the survivor works alone for a while before the restart
            await self.kill(victim, failover, (1.0, 4.0) if failover else (0.0, 0.5))

    def stop(self) -> None:
        for slot in self.slots:
            slot.busy = True
            slot.stop()

    def keep_evidence(self) -> list[str]:
        """Next to each live worker's log: its metrics (Faust's committed and end offsets
        per partition among them) and py-spy's view of its threads."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        written: list[str] = []
        for slot in self.slots:
            worker = slot.worker
            if worker is None or worker.proc is None or not slot.alive():
                continue
            worker.log_path.with_suffix(".metrics.txt").write_bytes(slot.get("/metrics") or b"")
            if Path(spy).exists():
                dump = subprocess.run(
                    [spy, "dump", "--pid", str(worker.proc.pid)], capture_output=True, text=True, check=False
                )
                worker.log_path.with_suffix(".stacks.txt").write_text(dump.stdout + dump.stderr)
            written.append(str(worker.log_path))
        return written


# --- one scenario ---------------------------------------------------------------------------


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
    race_join: bool = False
    """Reproduce the Faust input loss (README, Reliability): the second worker joins just
    as the first usage is produced, so a rebalance meets partitions with no committed
    offset while their first messages are being fetched. Otherwise nothing is produced
    until every worker is ready and the group has settled."""


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
    """What makes a command the same command, whenever it was decided (see the module doc)."""
    at = datetime.fromisoformat(command["at"].replace("Z", "+00:00")).astimezone(SHANGHAI)
    return (command["iccid"], command["action"], command["reason"], command["trigger"], at.strftime("%Y-%m"))


def uncounted(fleet: Fleet, states: dict[str, SimState], iccid: str, month: str) -> list[str]:
    """Where the records a SIM-month misses were on the usage topic: the evidence of a loss."""
    state = states.get(iccid)
    seen = state.seen if state is not None else {}
    missing = {
        u.record_id: fleet.placed.get((u.iccid, u.record_id), [])
        for u in [*fleet.before, *fleet.after]
        if u.iccid == iccid and u.month == month and u.record_id not in seen
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
    states = {key.decode(): codec.decode_state(value) for key, value in latest.items() if value is not None}
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


def isolation_for(guarantee: str | None) -> str:
    # Under exactly_once, aborted transactions' messages are in the log; consumers of
    # the outputs would read committed only, and so does the harness.
    return "read_committed" if guarantee == "exactly_once" else "read_uncommitted"


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
) -> str:
    """Chaos until its budget is spent and the group has committed every usage offset.
    Returns "" or why the phase did not finish."""
    failover = scenario.workers > 1

    async def chaos() -> None:
        await crew.monkey(kills, scenario.gap, failover)
        for _ in range(restarts):
            await crew.wait_ready()
            await asyncio.sleep(crew.rng.uniform(*scenario.gap))
            assert broker is not None
            # every other restart is a SIGKILL, counted over the whole scenario
            await restart_broker(broker, crew, hard=crew.stats.broker_restarts % 2 == 1, outage=(1.0, 5.0))

    task = asyncio.create_task(chaos())
    try:
        return await wait_committed(crew, scenario, bootstrap, settings, "usage", ends, task, deadline)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


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
            # The Faust commit stall after a restart or rebalance (README, Reliability):
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


def worker_pythonpath() -> str:
    """The workers must run this checkout's stream_app, whatever is installed."""
    current = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join(p for p in (str(ROOT), current) if p)


def check_worker_import(env: dict[str, str]) -> None:
    found = subprocess.run(
        [sys.executable, "-c", "import stream_app; print(stream_app.__file__)"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(ROOT):
        raise RuntimeError(f"workers would import {found}, not this checkout ({ROOT})")


def scenario_env(scenario: Scenario, bootstrap: str) -> dict[str, str]:
    overrides = {
        "STREAM_APP_PARTITIONS": str(scenario.partitions),
        "STREAM_APP_STANDBY_REPLICAS": "1" if scenario.workers > 1 else "0",
        "STREAM_APP_FAUST_BROKER_SESSION_TIMEOUT": str(scenario.session_timeout),
        "STREAM_APP_FAUST_BROKER_HEARTBEAT_INTERVAL": str(max(scenario.session_timeout / 5, 1.0)),
        "PYTHONPATH": worker_pythonpath(),
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
        await produce(bootstrap, settings.topic("subscriptions"), fleet.subscriptions)
        subscriptions = await _end_offsets(bootstrap, settings.topic("subscriptions"), scenario.partitions)
        result.stalled = await wait_committed(
            crew, scenario, bootstrap, settings, "subscriptions", subscriptions, None, deadline
        )
        result.step("subscriptions")
        if not result.stalled:
            await usage_phases(crew, scenario, fleet, bootstrap, settings, broker, result, deadline)
        states, commands = await read_outcome(
            bootstrap, settings, fleet, isolation_for(scenario.guarantee), 5 if result.stalled else 90
        )
        judge(fleet, states, commands, result)
        if result.lost:
            # the other half of the evidence: whether the group committed past what it missed
            usage = settings.topic("usage")
            ends = await _end_offsets(bootstrap, usage, scenario.partitions)
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
        ends = await _end_offsets(bootstrap, settings.topic("usage"), scenario.partitions)
        result.stalled = await run_phase(
            crew, scenario, bootstrap, settings, ends, kills, broker, restarts, deadline
        )
        result.processing_seconds += time.monotonic() - started
        result.step("march" if phase == 0 else "april")
        if result.stalled:
            return


def _clock_now(clock: dict[str, str]) -> datetime:
    start = datetime.fromisoformat(clock["STREAM_APP_CLOCK_START"].replace("Z", "+00:00"))
    elapsed = (time.time() - float(clock["STREAM_APP_CLOCK_ANCHOR"])) * float(clock["STREAM_APP_CLOCK_SPEED"])
    return start + timedelta(seconds=elapsed)


async def _end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        await consumer.stop()
    return {tp.partition: end for tp, end in ends.items()}


async def switch_clocks(crew: Crew, scenario: Scenario) -> None:
    """Kill every worker and restart it on a clock ``lead`` seconds before the month
    start, one at a time (with two workers each kill is a failover)."""
    # A restart's recovery grows with the changelog: leave time for every worker to be
    # back before 00:00, so that a running worker crosses it, not one catching up.
    slowest = max((t for slot in crew.slots for t in slot.start_seconds), default=0.0)
    lead = max(scenario.lead, scenario.workers * slowest + 8)
    clock = simulated_clock(BOUNDARY - timedelta(seconds=lead), 1, time.time())
    for n, slot in enumerate(crew.slots):
        slot.clock = clock
        await crew.kill(slot, scenario.workers > 1)
        await crew.wait_ready([slot])
        if n == 0:
            # the month start is then crossed by a running worker, not caught up at start-up
            crew.stats.boundary_crossed_live = _clock_now(clock) < BOUNDARY


# --- command line ---------------------------------------------------------------------------


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    common: dict[str, Any] = {
        "records": args.records,
        "sims": args.sims,
        "partitions": args.partitions,
        "seed": args.seed,
        "guarantee": args.processing_guarantee,
        "stall_after": args.stall_after,
        "session_timeout": args.session_timeout,
    }
    known = {
        "single": Scenario("single", kills=args.kills, **common),
        # the survivor waits out the dead member's session before it takes over
        "failover": Scenario(
            "failover", kills=args.failover_kills, workers=2, lead=45, race_join=args.race_join, **common
        ),
        "broker": Scenario(
            "broker", kills=args.broker_kills, broker_restarts=args.broker_restarts, own_broker=True, **common
        ),
    }
    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; choose from {sorted(known)}")
    return [known[name] for name in chosen]


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


async def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="stream-app-chaos-"))
    jars = LocalBroker(home=ROOT / ".kafka").ensure_jars()
    brokers: list[LocalBroker] = []
    shared = args.bootstrap

    async def new_broker(name: str) -> tuple[LocalBroker, str]:
        broker = LocalBroker(home=workdir / name, port=free_port(), controller_port=free_port(), libs=jars)
        brokers.append(broker)
        return broker, await asyncio.to_thread(broker.start, 120.0)

    results: list[Result] = []
    try:
        for scenario in scenarios(args):
            broker = None
            if scenario.own_broker:
                broker, bootstrap = await new_broker(f"kafka-{scenario.name}")
            else:
                if shared is None:
                    shared = (await new_broker("kafka"))[1]
                bootstrap = shared
            result = await run_scenario(scenario, bootstrap, workdir, broker)
            report(result)
            results.append(result)
            if broker is not None:
                await asyncio.to_thread(broker.stop)
    finally:
        for broker in brokers:
            await asyncio.to_thread(broker.stop)
        clean = bool(results) and all(r.ok and not r.stalled for r in results)
        if clean and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"worker logs and data kept in {workdir}", flush=True)
    print(summary(results), flush=True)
    if not all(r.ok for r in results):
        return 1
    return 2 if any(r.stalled for r in results) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.integration.chaos", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--scenarios", default="single,failover,broker")
    parser.add_argument("--records", type=int, default=200_000, help="usage messages per scenario")
    parser.add_argument("--sims", type=int, default=10_000, help="SIMs per scenario")
    parser.add_argument("--kills", type=int, default=10, help="random kill -9s, single worker")
    parser.add_argument("--failover-kills", type=int, default=4, help="random kill -9s, two workers")
    parser.add_argument("--broker-kills", type=int, default=2, help="random kill -9s, broker scenario")
    parser.add_argument("--broker-restarts", type=int, default=2, help="the second one is a SIGKILL")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--session-timeout", type=float, default=10.0, help="Kafka session, seconds")
    parser.add_argument("--stall-after", type=float, default=120.0, help="seconds without progress")
    parser.add_argument("--processing-guarantee", choices=("at_least_once", "exactly_once"), default=None)
    parser.add_argument("--bootstrap", default=None, help="an existing broker (default: start one)")
    parser.add_argument("--keep", action="store_true", help="keep worker logs and data")
    parser.add_argument(
        "--race-join", action="store_true", help="failover: reproduce the Faust input loss (README)"
    )
    args = parser.parse_args(argv)
    # The harness's own clients complain through every broker restart; the workers' logs keep theirs.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
