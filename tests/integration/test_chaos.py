"""Short versions of `make chaos` (tests/integration/chaos/): the real worker killed
with SIGKILL, two workers failing over to each other, and a worker cut off by a broker
restart, then every SIM's and every pool's monthly totals and the commands compared
with the ground truth."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from pathlib import Path

import pytest

from stream_app.tools.localbroker import LocalBroker, free_port

from .chaos import Result, Scenario, report, run_scenario

pytestmark = pytest.mark.integration

# A shorter session than the other tests' 10 s (each failover waits it out), and a
# stall declared after 45 s without progress rather than two minutes.
QUICK = Scenario(
    "quick",
    records=6_000,
    sims=300,
    kills=0,
    partitions=4,
    gap=(1.0, 4.0),
    session_timeout=6.0,
    lead=12.0,
    stall_after=45.0,
)


def assert_clean(result: Result) -> None:
    report(result)  # shown by pytest when the test fails
    assert not result.stalled, result.stalled
    assert (result.lost, result.double_counted) == (0, 0), result.examples
    assert (result.missing_commands, result.conflicting_command_ids) == (0, 0), result.examples
    assert (result.pool_totals_wrong, result.pool_rows_wrong) == (0, 0), result.examples
    assert result.pool_commands > 0  # the pools ran out and their members were told
    assert result.api_checked > 0 and result.api_mismatch == 0
    assert result.stats.crashes == 0, result.stats.crash_logs[:1]


async def test_a_worker_killed_at_random_moments_loses_and_double_counts_nothing(
    kafka: str, tmp_path: Path
) -> None:
    scenario = dataclasses.replace(QUICK, name="single", records=20_000, sims=1_000, kills=2, lead=20.0)
    result = await run_scenario(scenario, kafka, tmp_path)
    assert_clean(result)
    assert result.stats.kills >= 3  # one at a random moment in each phase, one across the month start
    assert result.stats.recovery_kills == 1  # phase B's kill cut a bulk recovery
    assert result.stats.boundary_crossed_live


async def test_a_rocksdb_worker_killed_at_random_moments_loses_and_double_counts_nothing(
    kafka: str, tmp_path: Path
) -> None:
    # The store a deployment runs: each restart opens the same folder, goes on from the
    # offsets RocksDB persisted, reads the changelog's tail into it (recovery.py writes
    # each chunk as one write batch) and reads SIMs straight from its databases.
    scenario = dataclasses.replace(QUICK, name="rocksdb", kills=2, store="rocksdb://", lead=20.0)
    result = await run_scenario(scenario, kafka, tmp_path)
    assert_clean(result)
    assert result.stats.kills >= 3
    assert result.stats.boundary_crossed_live


async def test_two_workers_failing_over_to_each_other_lose_and_double_count_nothing(
    kafka: str, tmp_path: Path
) -> None:
    # Each worker is killed in turn when the clocks move to the month start; the other
    # takes over its partitions from standby replicas. Before the worker kept its own
    # offsets (offsets.py), this stalled a partition's commits about one run in three.
    scenario = dataclasses.replace(QUICK, name="failover", workers=2, lead=30.0)
    result = await run_scenario(scenario, kafka, tmp_path)
    assert_clean(result)
    assert result.stats.failovers >= 1


async def test_a_broker_restarted_mid_stream_loses_and_double_counts_nothing(kafka_jars: Path) -> None:
    # A broker of its own: the session broker must not go down under the other tests.
    home = Path(tempfile.mkdtemp(prefix="stream-app-chaos-kafka-"))
    broker = LocalBroker(home=home, port=free_port(), controller_port=free_port(), libs=kafka_jars)
    try:
        bootstrap = await asyncio.to_thread(broker.start, 90.0)
        scenario = dataclasses.replace(QUICK, name="broker", broker_restarts=1, own_broker=True)
        result = await run_scenario(scenario, bootstrap, home, broker)
    finally:
        await asyncio.to_thread(broker.stop)
        shutil.rmtree(home, ignore_errors=True)
    assert_clean(result)
    assert result.stats.broker_restarts == 1
