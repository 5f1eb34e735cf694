"""The worker processes: one slot per worker (a pod), the crew that kills, fails over
and restarts them and restarts the ones that crash, and the check that they run this
checkout's stream_app."""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stream_app.tools.localbroker import free_port

from ..conftest import ROOT, WorkerProcess

RECOVERING = b"Restoring state from changelog topics"
RECOVERED = b"Done reading from changelog topics"
"""What Faust logs as the recovery of a worker's active partitions begins and ends."""


@dataclass(slots=True)
class Stats:
    kills: int = 0
    failovers: int = 0
    crashes: int = 0
    """Worker exits nobody asked for; the worker is restarted, like a pod would be."""
    broker_restarts: int = 0
    commit_stalls: int = 0
    """Times the group stopped committing with work left, and the workers were restarted."""
    recovery_kills: int = 0
    """Kills that landed while the victim was replaying its table's changelog."""
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
        Faust loses messages (docs/reliability.md), and the harness must not be the cause."""
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
        return self.answer(path, timeout)[0]

    def answer(self, path: str, timeout: float = 5.0) -> tuple[bytes | None, str]:
        """The body of a 2xx answer, or None and why not (the status and body, or the error)."""
        url = f"http://127.0.0.1:{self.env['STREAM_APP_WEB_PORT']}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                body: bytes = response.read()
                return body, ""
        except urllib.error.HTTPError as error:
            return None, f"HTTP {error.code}: {error.read()[:200]!r}"
        except OSError as error:
            return None, repr(error)

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

    async def monkey(self, kills: int, gap: tuple[float, float], failover: bool, recovering: bool) -> None:
        """``kills`` kill -9s at random moments: mostly a while after the victim is
        ready (mid-batch, mid-commit), sometimes during its start-up and recovery; with
        ``recovering``, the first one is aimed at a worker replaying its table's changelog."""
        for n in range(kills):
            if recovering and n == 0:
                await self.kill_recovering(failover)
                continue
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

    async def kill_recovering(self, failover: bool) -> None:
        """Restart a worker and kill it again as soon as it begins replaying its table's
        changelog (the bulk recovery); counted in ``recovery_kills`` when it was."""
        await self.wait_ready()
        victim = self.rng.choice(self.slots)
        await self.kill(victim, failover)
        worker = victim.worker
        assert worker is not None
        victim.busy = True
        try:
            deadline = time.monotonic() + 120
            while RECOVERING not in worker.log_path.read_bytes():
                if time.monotonic() > deadline or not worker.alive():
                    return
                await asyncio.sleep(0.02)
        finally:
            victim.busy = False
        await self.kill(victim, failover)
        if RECOVERED not in worker.log_path.read_bytes():
            self.stats.recovery_kills += 1

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
