"""`make bench-pools`: a pool of 100,000 members running out, on a real broker (R21).

A pool of ``--members`` SIMs spread over every partition is preloaded one record short
of its quota: each member's table entries and the pool's (its value and a row per
member) are written straight to the table's changelog, to the partition of their owner,
as a worker would have written them. A fresh worker recovers them; once its roster of
the pool is complete (GET /pools/{pool_id}), one usage record makes the pool run out.
Measured: from that record's send to the last of the members' suspend commands
(reason ``pool``) on ``sim.commands``, with the steps in between (the member's report
to its pool, the pool's notices to every member) and the rate. Then a second fresh
worker recovers everything, and the time until it serves the pool with its whole
roster is measured too. Prints the figures and writes bench-pools.json. Not a test:
nothing here asserts a speed.

    python bench/pools.py [--members 100000] [--output bench-pools.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet import PARTITIONS, iccid, usage  # noqa: E402 - the main bench's modules (bench.py)
from kafka import produce  # noqa: E402
from workers import (  # noqa: E402
    Worker,
    bench_env,
    check_aiokafka_c_extension,
    own_broker,
    run_script,
    show_results,
    stop_started,
)

from stream_app import codec  # noqa: E402
from stream_app.domain import Policy, SimState, copy_state, new_state  # noqa: E402
from stream_app.domain.engine import apply_input  # noqa: E402
from stream_app.domain.inputs import pool  # noqa: E402
from stream_app.domain.pools import USAGE, Report, apply_pool, apply_report, new_pool  # noqa: E402
from stream_app.domain.timeutil import format_time, parse_time  # noqa: E402
from stream_app.pipeline import validate  # noqa: E402
from stream_app.settings import Settings  # noqa: E402
from stream_app.tools.admin import ensure_topics  # noqa: E402
from stream_app.worker.app import TABLE  # noqa: E402
from stream_app.worker.pooling import ROWS_PER_WRITE  # noqa: E402

POOL_ID = "bench-pool"
WORKER_NOW = "2026-03-20T12:00:00+08:00"
"""Mid-month: nothing but the record makes anything happen."""
MONTH = "2026-03"
PER_MEMBER = 1_000_000
"""Bytes each member has counted this month (one record)."""


def _usage(n: int, record_id: str, start: str) -> dict[str, object]:
    return usage(n, record_id, parse_time(start), PER_MEMBER // 4, PER_MEMBER - PER_MEMBER // 4)


def member_template(policy: Policy) -> SimState:
    """A member as a worker would hold it: its subscription (no cap of its own) and one
    record counted, for itself and for its pool."""
    now = parse_time(WORKER_NOW)
    state = new_state(iccid(0), now, policy)
    subscription = {
        "iccid": iccid(0),
        "plan_id": "bench-pooled",
        "quota_bytes": None,
        "pool_id": POOL_ID,
        "auto_suspend": False,
        "valid_from": "2026-01-01T00:00:00+08:00",
        "expires_at": None,
        "updated_at": "2026-03-01T00:00:00+08:00",
    }
    apply_input(state, validate("subscriptions", subscription), now, policy)
    apply_input(state, validate("usage", _usage(0, "preload", "2026-03-20T10:00:00+08:00")), now, policy)
    assert state.pool_used == {POOL_ID: {MONTH: PER_MEMBER}}
    return state


def _partition(key: str) -> int:
    everyone = list(range(PARTITIONS))
    return int(DefaultPartitioner()(key.encode(), everyone, everyone))


def member_entries(members: int, policy: Policy) -> Iterator[tuple[bytes, bytes | None, int]]:
    """Every member's table entries, each to the partition its ICCID hashes to."""
    template = member_template(policy)
    assert template.subscription is not None
    for n in range(members):
        state = copy_state(template)
        state.iccid = iccid(n)
        state.subscription = replace(template.subscription, iccid=state.iccid)
        stored = codec.stored_of(state, policy)
        partition = _partition(state.iccid)
        stored.hot.partition = partition
        for key, value in codec.sim_entries(stored):
            yield key, value, partition


def pool_entries(members: int, policy: Policy) -> Iterator[tuple[bytes, bytes | None, int]]:
    """The pool's entries, to the partition of its id: each member's report applied, the
    pool one record short of its quota, written as a worker writes it (at most
    ROWS_PER_WRITE member rows per write of its value)."""
    now = parse_time(WORKER_NOW)
    state = new_pool(POOL_ID, now, policy)
    definition = {
        "pool_id": POOL_ID,
        "quota_bytes": members * PER_MEMBER + 1,
        "auto_suspend": True,
        "updated_at": "2026-03-01T00:00:00+08:00",
    }
    apply_pool(state, pool(definition), now, policy)
    for n in range(members):
        apply_report(state, Report(POOL_ID, iccid(n), USAGE, MONTH, PER_MEMBER, "preload"), now, policy)
    assert state.usage(MONTH).used == members * PER_MEMBER and not state.usage(MONTH).exhausted
    partition = _partition(POOL_ID)
    touched = sorted(state.touched)
    for first in range(0, len(touched), ROWS_PER_WRITE):
        state.touched = set(touched[first : first + ROWS_PER_WRITE])
        for key, value in codec.pool_entries(codec.PoolStored(state, partition)):
            yield key, value, partition


def cpu_seconds(worker: Worker) -> float:
    """The worker's CPU time so far (every thread, user and system)."""
    fields = Path(f"/proc/{worker.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_json(worker: Worker, path: str) -> dict[str, Any] | None:
    url = f"http://127.0.0.1:{worker.env['STREAM_APP_WEB_PORT']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body: dict[str, Any] = orjson.loads(response.read())
            return body
    except OSError:
        return None


def wait_roster(worker: Worker, members: int, timeout: float = 600) -> float:
    """Until the worker serves the pool with its whole roster (rebuilt by the table scan
    after recovery); returns the time it did."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        view = get_json(worker, f"/pools/{POOL_ID}?limit=0")
        if view is not None and view.get("members") == members:
            return time.perf_counter()
        if worker.proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(
        "the pool's roster was never complete:\n" + worker.log.read_text(errors="replace")[-3000:]
    )


class Watch:
    """Reads an output topic from its end: the timestamps of what the worker sends."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.times: list[float] = []
        self.largest = 0

    async def start(self) -> None:
        await self.consumer.start()
        partitions = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the positions now, before anything is sent
            await self.consumer.position(tp)

    async def poll(self, wanted: Any = None) -> int:
        for messages in (await self.consumer.getmany(timeout_ms=200, max_records=50_000)).values():
            for m in messages:
                self.largest = max(self.largest, len(m.value or b""))
                if wanted is None or wanted(orjson.loads(m.value)):
                    self.times.append(m.timestamp / 1000)
        return len(self.times)

    async def stop(self) -> None:
        await self.consumer.stop()


def is_pool_suspend(command: dict[str, Any]) -> bool:
    return bool(command["action"] == "suspend" and command["reason"] == "pool")


def profile(worker: Worker, output: str | None) -> subprocess.Popen[bytes] | None:
    """py-spy recording the worker's threads into ``output`` (raw: one collapsed stack a line)."""
    spy = Path(sys.executable).with_name("py-spy")
    if output is None:
        return None
    command = [str(spy), "record", "--pid", str(worker.proc.pid), "--format", "raw", "--threads"]
    return subprocess.Popen(
        [*command, "--output", output], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def run_out(bootstrap: str, settings: Settings, members: int, timeout: float) -> dict[str, Any]:
    """Send the record that makes the pool run out; time every step until the last
    member's suspend command."""
    watches = {
        "report": Watch(bootstrap, settings.topic("pool_usage")),
        "notices": Watch(bootstrap, settings.topic("pool_notices")),
        "commands": Watch(bootstrap, settings.topic("commands")),
    }
    changelog = Watch(bootstrap, f"{settings.app_id}-{TABLE}-changelog")
    for watch in (*watches.values(), changelog):
        await watch.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        now = settings.clock().now()
        record = _usage(0, "the-last-drop", format_time(now - timedelta(minutes=10)))
        sent = time.time()
        await (await producer.send(settings.topic("usage"), orjson.dumps(record), key=iccid(0).encode()))
        deadline = time.perf_counter() + timeout
        while len(watches["commands"].times) < members and time.perf_counter() < deadline:
            await watches["report"].poll()
            await watches["notices"].poll()
            await watches["commands"].poll(is_pool_suspend)
            await changelog.poll()
        await asyncio.sleep(2)  # what the worker writes right after (the pool's own value...)
        await changelog.poll()
    finally:
        await producer.stop()
        for watch in (*watches.values(), changelog):
            await watch.stop()
    commands, notices, report = (watches[k].times for k in ("commands", "notices", "report"))
    if len(commands) < members:
        raise RuntimeError(f"only {len(commands):,} of {members:,} suspend commands in {timeout:.0f} s")
    return {
        "pool_commands": len(commands),
        "seconds_to_last_command": max(commands) - sent,
        "seconds_to_first_command": min(commands) - sent,
        "seconds_to_report": min(report) - sent if report else None,
        "seconds_to_first_notice": min(notices) - sent if notices else None,
        "seconds_to_last_notice": max(notices) - sent if notices else None,
        "commands_per_second": len(commands) / (max(commands) - min(commands) or 1e-9),
        "largest_changelog_value_bytes": changelog.largest,
        "largest_notice_bytes": watches["notices"].largest,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the commands")
    parser.add_argument("--output", default=str(ROOT / "bench-pools.json"))
    parser.add_argument("--profile", default=None, help="py-spy's raw profile of the run-out, to this file")
    args = parser.parse_args()
    check_aiokafka_c_extension()
    workdir = Path(tempfile.mkdtemp(prefix="stream-app-bench-pools-"))
    results: dict[str, Any] = {
        "members": args.members,
        "machine": f"{os.cpu_count()} cpus, {sys.version.split()[0]}",
    }
    try:
        bootstrap = own_broker(workdir)
        env = bench_env(bootstrap, "pools", STREAM_APP_CLOCK_START=WORKER_NOW)
        settings = Settings.from_env(env)
        policy = settings.policy()
        await ensure_topics(settings)
        empty = Worker(env, workdir / "empty")  # creates the changelog topic as Faust wants it
        empty.wait_ready()
        empty.stop()

        began = time.perf_counter()
        changelog = f"{settings.app_id}-{TABLE}-changelog"
        written = await produce(bootstrap, changelog, member_entries(args.members, policy))
        written += await produce(bootstrap, changelog, pool_entries(args.members, policy))
        print(
            f"preloaded {args.members:,} members and their pool ({written:,} table entries) "
            f"in {time.perf_counter() - began:.1f} s",
            flush=True,
        )

        worker = Worker(env, workdir / "worker")
        results["seconds_to_ready"] = worker.wait_ready() - worker.started
        results["seconds_to_roster"] = wait_roster(worker, args.members) - worker.started
        print(
            f"worker ready in {results['seconds_to_ready']:.1f} s, the pool's roster of "
            f"{args.members:,} in {results['seconds_to_roster']:.1f} s",
            flush=True,
        )
        spy = profile(worker, args.profile)
        cpu = cpu_seconds(worker)
        results.update(await run_out(bootstrap, settings, args.members, args.timeout))
        # The wall time depends on what else the machine runs; the worker's own CPU time
        # over the same span (which ends 2 s after the last command) does not.
        results["worker_cpu_seconds"] = cpu_seconds(worker) - cpu
        results["load_average"] = os.getloadavg()[0]
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        results["worker_rss_bytes"] = worker.rss()
        print(
            f"pool ran out: the last of {results['pool_commands']:,} suspend commands "
            f"{results['seconds_to_last_command']:.1f} s after the record "
            f"({results['commands_per_second']:,.0f} commands/s; "
            f"report {results['seconds_to_report']:.2f} s, "
            f"notices {results['seconds_to_first_notice']:.2f}-{results['seconds_to_last_notice']:.1f} s, "
            f"first command {results['seconds_to_first_command']:.2f} s); the worker used "
            f"{results['worker_cpu_seconds']:.1f} s of CPU, load average {results['load_average']:.1f}",
            flush=True,
        )
        worker.stop()

        fresh = Worker(env, workdir / "fresh")
        results["recovered_seconds_to_ready"] = fresh.wait_ready() - fresh.started
        results["recovered_seconds_to_roster"] = wait_roster(fresh, args.members) - fresh.started
        view = get_json(fresh, f"/pools/{POOL_ID}?limit=0") or {}
        results["recovered_state"] = view.get("state")
        print(
            f"a fresh worker: ready in {results['recovered_seconds_to_ready']:.1f} s, serving the pool "
            f"({view.get('state')}, {view.get('members'):,} members) in "
            f"{results['recovered_seconds_to_roster']:.1f} s",
            flush=True,
        )
        fresh.stop()
    finally:
        stop_started()
        shutil.rmtree(workdir, ignore_errors=True)

    show_results(results, args.output)


if __name__ == "__main__":
    run_script(main, "bench-pools")
