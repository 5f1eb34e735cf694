"""`make bench`: stream-app's throughput, latency, memory and recovery on a real broker,
in the steady state (DESIGN "Scale").

The measured records land on SIMs in the middle of a month that each remember a full
dedupe horizon of record ids, one per 15 minutes (fleet.py): the table's changelog is
preloaded with those SIMs, as written by the project's own codec, before the worker
starts. Every figure is measured in the same run as its baseline (these machines are
noisy): the worker's records/s is reported with the raw-consumer ceiling over the same
topic. Prints one table and writes bench-results.json. Not a test: nothing here asserts
a speed.

    python bench/bench.py [--records 1000000] [--sims 100000] [--memory-sims 1000000]

Modules: fleet.py (the steady-state SIMs and their records), kafka.py (producing, the
ceiling, commits, changelog bytes), workers.py (the worker processes), figures.py
(latency, memory and recovery, replay).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from figures import latency, memory_and_recovery, preload_fleet, replay_rate  # noqa: E402
from fleet import EVERY, WORKER_NOW, horizon_ids, usage_records  # noqa: E402
from kafka import bytes_written, ceiling, changelog_ends, produce, wait_committed  # noqa: E402
from workers import (  # noqa: E402
    Worker,
    bench_env,
    check_aiokafka_c_extension,
    own_broker,
    run_script,
    show_results,
    stop_started,
)

from stream_app.settings import Settings  # noqa: E402
from stream_app.tools.admin import ensure_topics  # noqa: E402

PARTS = ("throughput", "memory", "replay")
MEMORY_STORE_SIMS = 200_000
"""At most this many SIMs for the memory store's figures: it holds every SIM's entries
in the worker's own memory (about 7 GB for a million steady-state SIMs), more than this
shared machine should give one run. RocksDB, the store of the target, takes them all."""


async def throughput(
    bootstrap: str, workdir: Path, args: argparse.Namespace, results: dict[str, Any]
) -> None:
    """The worker end to end on the steady fleet, the ceiling, changelog bytes, latency."""
    env = bench_env(bootstrap, uuid.uuid4().hex[:8], STREAM_APP_STORE=args.throughput_store)
    results["throughput_store"] = args.throughput_store
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    began = time.perf_counter()
    # The SIMs' remembered ids stop where the measured records begin.
    first = WORKER_NOW - EVERY * (args.records / args.sims) - EVERY
    entries = await preload_fleet(bootstrap, settings, args.sims, first)
    results["profile_ids_per_sim"] = horizon_ids(settings.dedupe_horizon)
    print(
        f"preloaded {args.sims:,} steady-state SIMs ({results['profile_ids_per_sim']} ids each, "
        f"{entries:,} table entries) in {time.perf_counter() - began:.1f} s",
        flush=True,
    )

    before = await changelog_ends(bootstrap, settings.app_id)
    worker = Worker(env, workdir / "worker")
    worker.wait_ready()
    # The records are sent once the worker is ready, so its recovery (measured on its own
    # below) is not counted; sending them takes a few percent of the run, on the same CPUs.
    began = time.perf_counter()
    produced = await produce(
        bootstrap, settings.topic("usage"), usage_records(args.records, args.sims, first)
    )
    results["send_seconds"] = time.perf_counter() - began
    done = await wait_committed(bootstrap, settings.app_id, settings.topic("usage"), produced, 3600)
    results["worker_rps"] = produced / (done - began)
    results["ceiling_rps"] = await ceiling(bootstrap, settings.topic("usage"), produced)
    results["ratio"] = results["worker_rps"] / results["ceiling_rps"]
    print(
        f"worker: {results['worker_rps']:,.0f} records/s, ceiling {results['ceiling_rps']:,.0f} "
        f"records/s ({results['ratio']:.3f} x ceiling)",
        flush=True,
    )
    # Every changelog record of the run is acknowledged before its input offset is
    # committed (offsets.py): all of them are on the broker by now.
    kinds = await bytes_written(bootstrap, before, await changelog_ends(bootstrap, settings.app_id))
    written = sum(size for _count, size in kinds.values())
    cards = kinds.get("card", [0, 0])[0]
    results["changelog_bytes_per_record"] = written / produced
    results["changelog_records_per_record"] = sum(count for count, _size in kinds.values()) / produced
    # A SIM stored once per batch writes one card: what a record costs when no other
    # record of its SIM shares its batch (the real steady state, one record per 15 min).
    results["changelog_bytes_per_sim_write"] = written / cards if cards else 0.0
    for kind, (count, size) in sorted(kinds.items()):
        results[f"changelog_{kind}_bytes_per_record"] = size / produced
        results[f"changelog_{kind}_records"] = count
    print(
        f"changelog: {results['changelog_bytes_per_record']:,.0f} bytes per record, "
        f"{results['changelog_bytes_per_sim_write']:,.0f} per SIM stored",
        flush=True,
    )

    figures = await latency(
        bootstrap, env, results["worker_rps"] / 2, args.latency_seconds, args.sims, args.latency_warmup
    )
    worker.stop()
    results.update(figures)
    print(
        f"latency: p50 {_ms(results, 'p50_latency_ms')}, p99 {_ms(results, 'p99_latency_ms')} over "
        f"{results['latency_samples']} probes after a {args.latency_warmup:g} s warm-up "
        f"(p99 {_ms(results, 'p99_latency_ms_warmup')} within it, {_ms(results, 'p99_latency_ms_all')} "
        f"over all {results['latency_probes']}, {results['latency_missing']} missing; generator "
        f"late by {_ms(results, 'latency_generator_lag_max_ms')} at most)",
        flush=True,
    )


def _ms(results: dict[str, Any], key: str) -> str:
    return f"{results[key]:.1f} ms" if key in results else "n/a"


async def memory(bootstrap: str, workdir: Path, args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Resident memory and a fresh worker's recovery, steady-state SIMs in the table."""
    for store, key, sims in (
        ("memory://", "memory", min(args.memory_sims, MEMORY_STORE_SIMS)),
        ("rocksdb://", "rocksdb", args.memory_sims),
    ):
        if key not in args.stores:
            continue
        per_sim, recovery, rss, floor = await memory_and_recovery(bootstrap, sims, store, workdir)
        results[f"rss_bytes_per_sim_{key}"] = per_sim
        results[f"rss_bytes_{key}"] = rss
        results[f"recovery_seconds_{key}"] = recovery
        results[f"changelog_read_seconds_{key}"] = floor
        results[f"sims_{key}"] = sims
        print(
            f"{key}: {per_sim} bytes/SIM ({rss / 2**20:.0f} MiB for {sims:,} SIMs), "
            f"fresh worker ready in {recovery:.1f} s; a plain consumer reads the changelog "
            f"in {floor:.1f} s ({recovery / floor:.1f} x)",
            flush=True,
        )
    if "rocksdb" in args.stores:
        results["recovery_seconds"] = results["recovery_seconds_rocksdb"]
        results["recovery_sims"] = args.memory_sims


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--sims", type=int, default=100_000)
    parser.add_argument("--memory-sims", type=int, default=1_000_000)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument(
        "--latency-warmup", type=float, default=3.0, help="seconds of latency load sent before probes count"
    )
    parser.add_argument("--output", default=str(ROOT / "bench-results.json"))
    parser.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        help="run only this part (repeatable); e.g. --only memory --stores rocksdb for a million SIMs",
    )
    parser.add_argument("--stores", default="memory,rocksdb", help="stores of the memory part")
    parser.add_argument(
        "--throughput-store",
        default="memory://",
        choices=("memory://", "rocksdb://"),
        help="the worker's store in the throughput and latency part",
    )
    args = parser.parse_args()
    check_aiokafka_c_extension()

    workdir = Path(tempfile.mkdtemp(prefix="stream-app-bench-"))
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or own_broker(workdir)
    results: dict[str, Any] = {
        "records": args.records,
        "sims": args.sims,
        "machine": f"{os.cpu_count()} cpus, {sys.version.split()[0]}",
    }
    try:
        parts = args.only or PARTS
        if "throughput" in parts:
            await throughput(bootstrap, workdir, args, results)
        if "memory" in parts:
            await memory(bootstrap, workdir, args, results)
        if "replay" in parts:
            results["replay_rps"] = replay_rate(min(args.records, 200_000), min(args.sims, 20_000))
            print(f"replay: {results['replay_rps']:,.0f} lines/s", flush=True)
    finally:
        stop_started()
        shutil.rmtree(workdir, ignore_errors=True)

    show_results(results, args.output)


if __name__ == "__main__":
    run_script(main, "bench")
