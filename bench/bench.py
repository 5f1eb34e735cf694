"""`make bench`: stream-app's throughput, latency, memory and recovery on a real broker.

Every figure is measured in the same run as its baseline (these machines are noisy):
the worker's records/s is reported with the raw-consumer ceiling over the same topic.
Prints one table and writes bench-results.json. Not a test: nothing here asserts a speed.

    python bench/bench.py [--records 1000000] [--sims 100000] [--memory-sims 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka.partitioner import DefaultPartitioner  # noqa: E402

from stream_app import codec  # noqa: E402
from stream_app.domain import Policy, SimState, copy_state, new_state  # noqa: E402
from stream_app.domain.engine import apply_input  # noqa: E402
from stream_app.domain.timeutil import format_time, parse_time  # noqa: E402
from stream_app.pipeline import validate  # noqa: E402
from stream_app.settings import Settings  # noqa: E402
from stream_app.tools.admin import ensure_topics  # noqa: E402
from stream_app.tools.interrupt import interrupt_on_signals  # noqa: E402
from stream_app.tools.localbroker import LocalBroker, free_port  # noqa: E402
from stream_app.tools.replay import replay_lines  # noqa: E402
from stream_app.topics import REGISTRY, env_name  # noqa: E402
from stream_app.worker.app import TABLE  # noqa: E402

PARTITIONS = 8
# Records span the month start in Shanghai; the worker's simulated clock stands after them.
FIRST_START = parse_time("2026-03-31T22:00:00+08:00")
SPAN = timedelta(hours=4)
WORKER_NOW = "2026-04-01T03:00:00+08:00"


def check_aiokafka_c_extension() -> None:
    from aiokafka.record.default_records import DefaultRecordBatch

    if not DefaultRecordBatch.__module__.startswith("aiokafka.record._crecords"):
        sys.exit(
            "bench: aiokafka's C extension is not in use (pure-Python records cost ~30 us "
            "each in CRC alone); reinstall aiokafka from a binary wheel"
        )


def iccid(n: int) -> str:
    return f"898600{n:014d}"


def subscription(n: int, quota: int) -> bytes:
    return orjson.dumps(
        {
            "iccid": iccid(n),
            "plan_id": "bench",
            "quota_bytes": quota,
            "auto_suspend": n % 2 == 0,
            "valid_from": "2026-01-01T00:00:00+08:00",
            "expires_at": None,
            "updated_at": "2026-03-01T00:00:00+08:00",
        }
    )


def usage_records(records: int, sims: int, duplicate_share: float = 0.01) -> Iterator[tuple[str, bytes]]:
    """(iccid, message) in time order over SPAN; about 1 % are exact repeats."""
    step = SPAN / records
    every = int(1 / duplicate_share) if duplicate_share else 0
    previous: tuple[str, bytes] | None = None
    for i in range(records):
        if every and i % every == every - 1 and previous is not None:
            yield previous
            continue
        n = (i * 7919) % sims
        start = FIRST_START + step * i
        message = orjson.dumps(
            {
                "record_id": f"r{i}",
                "iccid": iccid(n),
                "carrier": "cmcc",
                "start": format_time(start),
                "end": format_time(start + timedelta(minutes=1)),
                "bytes_up": 1000 + i % 5000,
                "bytes_down": 20_000 + i % 50_000,
            }
        )
        previous = (iccid(n), message)
        yield previous


async def produce(
    bootstrap: str, topic: str, items: Iterator[tuple[str, bytes]] | Iterator[tuple[bytes, bytes | None, int]]
) -> int:
    """Send (key, value) pairs, or (key, value, partition) triples."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1, compression_type=None
    )
    await producer.start()
    count, pending = 0, []
    try:
        for item in items:
            key = item[0].encode() if isinstance(item[0], str) else item[0]
            partition = item[2] if len(item) > 2 else None
            pending.append(await producer.send(topic, item[1], key=key, partition=partition))
            count += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count


async def ceiling(bootstrap: str, topic: str, expected: int) -> float:
    """A plain aiokafka consumer + orjson + a dict sum: what Kafka and Python allow."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    totals: dict[str, int] = defaultdict(int)
    seen, began = 0, time.perf_counter()
    try:
        while seen < expected:
            for messages in (await consumer.getmany(timeout_ms=1000, max_records=20_000)).values():
                for m in messages:
                    value = orjson.loads(m.value)
                    totals[value["iccid"]] += value["bytes_up"] + value["bytes_down"]
                seen += len(messages)
    finally:
        await consumer.stop()
    return seen / (time.perf_counter() - began)


async def committed(bootstrap: str, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except Exception:
        return 0
    finally:
        await admin.close()
    return sum(max(m.offset, 0) for tp, m in offsets.items() if tp.topic == topic)


class Worker:
    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        self.env = {**os.environ, **env, "STREAM_APP_DATA_DIR": str(data_dir)}
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.started = time.perf_counter()
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream_app", "worker"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        STARTED.append(self)

    def wait_ready(self, timeout: float = 600) -> float:
        """Until /readyz answers 200: partitions owned and tables recovered."""
        url = f"http://127.0.0.1:{self.env['STREAM_APP_WEB_PORT']}/readyz"
        deadline = time.perf_counter() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter()
            except OSError:
                pass
            if self.proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError("worker failed:\n" + self.log.read_text(errors="replace")[-3000:])
            time.sleep(0.05)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def bench_env(bootstrap: str, suffix: str, **extra: str) -> dict[str, str]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_APP_ID": f"bench-{suffix}",
        "STREAM_APP_PARTITIONS": str(PARTITIONS),
        "STREAM_APP_STANDBY_REPLICAS": "0",
        "STREAM_APP_WEB_PORT": str(free_port()),
        "STREAM_APP_LOG_LEVEL": "warning",
        "STREAM_APP_CLOCK": "simulated",
        "STREAM_APP_CLOCK_START": WORKER_NOW,
        "STREAM_APP_CLOCK_SPEED": "1",
        "STREAM_APP_CLOCK_ANCHOR": str(time.time()),
        "STREAM_APP_FAUST_BROKER_SESSION_TIMEOUT": "10",
    }
    for spec in REGISTRY:
        env[env_name(spec.logical)] = f"{spec.default_name}.bench-{suffix}"
    env.update(extra)
    return env


async def wait_committed(bootstrap: str, group: str, topic: str, total: int, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while await committed(bootstrap, group, topic) < total:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{group} did not commit {total} offsets on {topic} in {timeout} s")
        await asyncio.sleep(0.25)
    return time.perf_counter()


async def latency(bootstrap: str, env: dict[str, str], rate: float, seconds: float, sims: int) -> list[float]:
    """Decision latency under load: records at ``rate``/s, the bench's own SIMs' usage
    with one probe in twenty, a record for a never-seen SIM (it gives an unknown_sim
    alert at once); from the probe's produce time to its alert's append."""
    settings = Settings.from_env(env)
    alerts = AIOKafkaConsumer(
        settings.topic("alerts"),
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await alerts.start()
    await alerts.seek_to_end()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    now = parse_time(WORKER_NOW)
    began, i = time.perf_counter(), 0
    try:
        while time.perf_counter() - began < seconds:
            probe = i % 20 == 0
            record_id = f"lat-{i}"
            sim = f"898601{i:014d}" if probe else iccid((i * 7919) % sims)
            value = orjson.dumps(
                {
                    "record_id": record_id,
                    "iccid": sim,
                    "carrier": "cmcc",
                    "start": format_time(now - timedelta(minutes=5)),
                    "end": format_time(now - timedelta(minutes=4)),
                    "bytes_up": 1,
                    "bytes_down": 1,
                }
            )
            if probe:
                sent[record_id] = time.time()
            await producer.send(settings.topic("usage"), value, key=sim.encode())
            i += 1
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
        await producer.flush()
        latencies: list[float] = []
        deadline = time.perf_counter() + 30
        while len(latencies) < len(sent) and time.perf_counter() < deadline:
            for messages in (await alerts.getmany(timeout_ms=500)).values():
                for m in messages:
                    alert = orjson.loads(m.value)
                    if alert["kind"] == "unknown_sim" and alert.get("cause") in sent:
                        latencies.append(m.timestamp / 1000 - sent[alert["cause"]])
        return latencies
    finally:
        await producer.stop()
        await alerts.stop()


def replay_rate(records: int, sims: int) -> float:
    lines = [
        orjson.dumps({"topic": "sim.subscriptions", "value": orjson.loads(subscription(n, 10**12))})
        for n in range(sims)
    ]
    lines += [b'{"topic":"sim.usage","value":' + value + b"}" for _, value in usage_records(records, sims)]
    settings = Settings.from_env({"STREAM_APP_DEDUPE_HORIZON": "30d"})
    began = time.perf_counter()
    count = sum(1 for _ in replay_lines(settings, lines))
    elapsed = time.perf_counter() - began
    assert count >= 0
    return len(lines) / elapsed


def state_template(policy: Policy) -> SimState:
    """One realistic state: a subscription and a month of ten usage records."""
    now = parse_time(WORKER_NOW)
    state = new_state(iccid(0), now, policy)
    sub = orjson.loads(subscription(0, 10**9))
    apply_input(state, validate("subscriptions", sub), now, policy)
    for i in range(10):
        start = now - timedelta(hours=2) + timedelta(minutes=5 * i)
        record = {
            "record_id": f"template-{i}",
            "iccid": iccid(0),
            "carrier": "cmcc",
            "start": format_time(start),
            "end": format_time(start + timedelta(minutes=1)),
            "bytes_up": 1000 + i,
            "bytes_down": 20_000 + i,
        }
        apply_input(state, validate("usage", record), now, policy)
    return state


def stored_states(sims: int, template: SimState, policy: Policy) -> Iterator[tuple[bytes, bytes | None, int]]:
    """The table entries of ``sims`` SIMs like ``template``; each names the partition its
    key hashes to, the one the producer's default partitioner sends it to, as a worker
    would have."""
    everyone = list(range(PARTITIONS))
    pick = DefaultPartitioner()
    assert template.subscription is not None
    for n in range(sims):
        state = copy_state(template)
        state.iccid = iccid(n)
        state.subscription = replace(template.subscription, iccid=state.iccid)
        stored = codec.stored_of(state, policy)
        partition = pick(state.iccid.encode(), everyone, everyone)
        stored.hot.partition = partition
        for key, value in codec.sim_entries(stored):
            yield key, value, partition


def settled_rss(worker: Worker, timeout: float = 120) -> int:
    """RSS once it stops growing (after recovery the worker builds its due index)."""
    deadline = time.perf_counter() + timeout
    previous = worker.rss()
    while time.perf_counter() < deadline:
        time.sleep(3)
        current = worker.rss()
        if abs(current - previous) < previous * 0.005:
            return current
        previous = current
    return worker.rss()


async def memory_per_sim(bootstrap: str, sims: int, store: str, workdir: Path) -> tuple[int, float, int]:
    """RSS per SIM with ``sims`` SIMs in state, and the time a fresh worker takes to recover them.

    The states are written straight to the table's changelog (what a worker would have
    written), so the figure does not wait for a million subscriptions to be processed.
    """
    suffix = f"{store.split(':', maxsplit=1)[0]}-{uuid.uuid4().hex[:6]}"
    env = bench_env(bootstrap, suffix, STREAM_APP_STORE=store)
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    empty = Worker(env, workdir / f"{suffix}-empty")  # also creates the changelog topic
    empty.wait_ready()
    baseline = settled_rss(empty)
    empty.stop()
    policy = settings.policy()
    entries = stored_states(sims, state_template(policy), policy)
    await produce(bootstrap, f"{settings.app_id}-{TABLE}-changelog", entries)
    fresh = Worker(env, workdir / f"{suffix}-fresh")
    recovery = fresh.wait_ready() - fresh.started
    rss = settled_rss(fresh)
    fresh.stop()
    return max(rss - baseline, 0) // sims, recovery, rss


async def main() -> None:  # noqa: PLR0915 - one linear script, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--sims", type=int, default=100_000)
    parser.add_argument("--memory-sims", type=int, default=1_000_000)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--output", default=str(ROOT / "bench-results.json"))
    args = parser.parse_args()
    check_aiokafka_c_extension()

    workdir = Path(tempfile.mkdtemp(prefix="stream-app-bench-"))
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = LocalBroker(
            home=workdir / "kafka",
            port=free_port(),
            controller_port=free_port(),
            libs=LocalBroker(home=ROOT / ".kafka").ensure_jars(),
        )
        STARTED.append(broker)
        bootstrap = broker.start()
    results: dict[str, Any] = {
        "records": args.records,
        "sims": args.sims,
        "machine": f"{os.cpu_count()} cpus, {sys.version.split()[0]}",
    }
    try:
        suffix = uuid.uuid4().hex[:8]
        env = bench_env(bootstrap, suffix)
        settings = Settings.from_env(env)
        await ensure_topics(settings)
        began = time.perf_counter()
        await produce(
            bootstrap,
            settings.topic("subscriptions"),
            ((iccid(n), subscription(n, 400_000 + n % 1_000_000)) for n in range(args.sims)),
        )
        produced = await produce(bootstrap, settings.topic("usage"), usage_records(args.records, args.sims))
        print(
            f"preloaded {args.sims:,} subscriptions and {produced:,} records "
            f"in {time.perf_counter() - began:.1f} s",
            flush=True,
        )

        results["ceiling_rps"] = await ceiling(bootstrap, settings.topic("usage"), produced)
        print(f"ceiling: {results['ceiling_rps']:,.0f} records/s", flush=True)

        worker = Worker(env, workdir / "worker")
        ready = worker.wait_ready()
        done = await wait_committed(bootstrap, settings.app_id, settings.topic("usage"), produced, 3600)
        results["worker_rps"] = produced / (done - ready)
        results["ratio"] = results["worker_rps"] / results["ceiling_rps"]
        print(
            f"worker: {results['worker_rps']:,.0f} records/s ({results['ratio']:.2f} x ceiling)", flush=True
        )

        lat = await latency(bootstrap, env, results["worker_rps"] / 2, args.latency_seconds, args.sims)
        worker.stop()
        if lat:
            quantiles = statistics.quantiles(lat, n=100)
            results["p50_latency_ms"], results["p99_latency_ms"] = quantiles[49] * 1000, quantiles[98] * 1000
        results["latency_samples"] = len(lat)
        print(
            f"latency: p50 {results.get('p50_latency_ms', 0):.1f} ms, "
            f"p99 {results.get('p99_latency_ms', 0):.1f} ms over {len(lat)} records",
            flush=True,
        )

        for store, key in (("memory://", "memory"), ("rocksdb://", "rocksdb")):
            per_sim, recovery, rss = await memory_per_sim(bootstrap, args.memory_sims, store, workdir)
            results[f"rss_bytes_per_sim_{key}"] = per_sim
            results[f"rss_bytes_{key}"] = rss
            results[f"recovery_seconds_{key}"] = recovery
            print(
                f"{key}: {per_sim} bytes/SIM ({rss / 2**20:.0f} MiB for {args.memory_sims:,} SIMs), "
                f"fresh worker ready in {recovery:.1f} s",
                flush=True,
            )
        results["recovery_seconds"] = results["recovery_seconds_rocksdb"]
        results["recovery_sims"] = args.memory_sims

        results["replay_rps"] = replay_rate(min(args.records, 200_000), min(args.sims, 20_000))
        print(f"replay: {results['replay_rps']:,.0f} lines/s", flush=True)
    finally:
        stop_started()
        shutil.rmtree(workdir, ignore_errors=True)

    Path(args.output).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print()
    print(f"{'figure':<28}{'value':>18}")
    for key, value in results.items():
        shown = (
            f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
        )
        print(f"{key:<28}{shown:>18}")
    print(f"\nwritten to {args.output}")


# Interrupted (Ctrl-C, `timeout`, kill) or not, the bench stops what it started: its
# broker runs in a session of its own and would outlive it otherwise.
STARTED: list[Worker | LocalBroker] = []


def stop_started() -> None:
    """Stop every worker and broker this run started, newest first (each stop is idempotent)."""
    while STARTED:
        STARTED.pop().stop()


if __name__ == "__main__":
    interrupt_on_signals()
    try:
        asyncio.run(main())
    except KeyboardInterrupt as signalled:
        stop_started()
        print(
            f"bench: interrupted ({signalled}); its broker and workers are stopped",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        # Exit now: the Kafka clients' sends cut short are dropped on purpose, and would
        # only be reported as "Task was destroyed" while the interpreter winds down.
        os._exit(1)
