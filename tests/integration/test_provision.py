"""The whole loop on the real broker: a worker with acknowledgement tracking on, and
`stream-app provision` as a real process applying its commands on a simulated carrier.

Both run on one simulated clock at 20x, so the engine's resend backoffs (1, 2, 4
minutes) take seconds; the carrier's latency, repeat window and inventory interval are
in the same simulated time."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream_app.domain.timeutil import format_time, parse_time

from .conftest import Outputs, WorkerProcess, outputs_for, send, simulated_clock, wait_known, worker_env
from .test_worker import iccid

pytestmark = pytest.mark.integration

SPEED = 20
START = parse_time("2026-03-16T04:00:00Z")  # mid-month in every zone: no month start in the test
QUOTA = 1000


def subscription(sim: str) -> dict[str, Any]:
    return {
        "iccid": sim,
        "plan_id": "iot-1k",
        "quota_bytes": QUOTA,
        "valid_from": "2026-01-01T00:00:00Z",
        "expires_at": None,
        "auto_suspend": True,
        "updated_at": format_time(START - timedelta(days=1)),
    }


def over_quota(sim: str, now: datetime) -> dict[str, Any]:
    """One record of 1,100 bytes, over the 1,000-byte quota, ended five minutes ago."""
    begin = now - timedelta(minutes=10)
    return {
        "record_id": f"{sim}-1",
        "iccid": sim,
        "carrier": "cmcc",
        "start": format_time(begin),
        "end": format_time(begin + timedelta(minutes=5)),
        "bytes_up": 600,
        "bytes_down": 500,
    }


def sim_state(worker: WorkerProcess, sim: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{worker.settings.web_port}/sims/{sim}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body: dict[str, Any] = orjson.loads(response.read())
    return body


async def settled(worker: WorkerProcess, sim: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The SIM's state once ``done`` holds (the result may still be on its way)."""
    deadline = time.monotonic() + 60
    body = sim_state(worker, sim)
    while not done(body):
        assert time.monotonic() < deadline, f"{sim} never settled: {body}"
        await asyncio.sleep(0.3)
        body = sim_state(worker, sim)
    return body


def applied_and_idle(body: dict[str, Any]) -> bool:
    carrier = body.get("carrier") or {}
    return carrier.get("status") == "suspended" and body["pending_commands"] == []


def start_provision(worker: WorkerProcess, log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "stream_app", "provision", *args],
            env=worker.env,  # the worker's topics and clock
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def sends(out: Outputs, command_id: str) -> list[int]:
    return [c["attempt"] for c in out.of("commands", command_id=command_id)]


async def test_commands_are_applied_resent_given_up_and_drift_repaired(
    kafka: str,
    start_worker: Callable[[dict[str, str]], WorkerProcess],
    producer: AIOKafkaProducer,
    tmp_path: Path,
) -> None:
    env = worker_env(
        kafka,
        STREAM_APP_COMMAND_ACK_TIMEOUT="2m",  # 6 s wall: well above a round trip
        STREAM_APP_COMMAND_MAX_ATTEMPTS="4",
        **simulated_clock(START, SPEED, time.time()),
    )
    worker = start_worker(env)
    settings = worker.settings
    plain, once, always, drifting = sims = [iccid() for _ in range(4)]
    log_path = tmp_path / "provision.log"
    provision = start_provision(
        worker,
        log_path,
        *("--latency", "10s", "--jitter", "10s", "--fail-rate", "0", "--reject-rate", "0"),
        *("--repeat-window", "0", "--inventory-every", "1m", "--seed", "3"),
        *("--refuse", f"{once}:failed:1", "--refuse", f"{always.lower()}:failed", "--drift-card", drifting),
    )
    out = await outputs_for(kafka, settings)
    try:
        now = settings.clock().now()
        for sim in sims:
            await send(producer, settings, "subscriptions", subscription(sim))
        await wait_known(worker, *sims)
        for sim in sims:
            await send(producer, settings, "usage", over_quota(sim, now))
        await out.wait_for(lambda _: len(out.of("commands", trigger="usage")) == len(sims))
        suspend = {c["iccid"]: c["command_id"] for c in out.of("commands", trigger="usage")}
        await out.wait_for(
            lambda _: (
                bool(out.of("alerts", kind="command_failed", iccid=always))
                and bool(out.of("commands", iccid=drifting, trigger="reconcile"))
                and len(sends(out, suspend[once])) >= 2
            ),
            timeout=120,
        )
        plain_state = await settled(worker, plain, applied_and_idle)
        once_state = await settled(worker, once, applied_and_idle)
        [reconcile] = out.of("commands", iccid=drifting, trigger="reconcile")
        drifting_state = await settled(
            worker,
            drifting,
            lambda b: (
                applied_and_idle(b)
                and {"command_id": reconcile["command_id"], "outcome": "applied"}
                in [{k: r[k] for k in ("command_id", "outcome")} for r in b["last_results"]]
            ),
        )
    finally:
        await out.consumer.stop()
        status = stop(provision)
    log = log_path.read_text()

    # applied at once: the carrier's status shown next to the intended one, nothing pending
    assert plain_state["intended_status"] == "suspended"
    assert [(r["command_id"], r["outcome"]) for r in plain_state["last_results"]] == [
        (suspend[plain], "applied")
    ]
    assert sends(out, suspend[plain]) == [1]

    # refused once (failed): sent again, attempt 2, then applied
    assert sends(out, suspend[once])[:2] == [1, 2]
    outcomes = [r["outcome"] for r in once_state["last_results"] if r["command_id"] == suspend[once]]
    assert outcomes[0] == "failed" and outcomes[-1] == "applied"
    assert out.of("alerts", kind="command_failed", iccid=once) == []

    # refused always: four sends, then one command_failed
    assert sends(out, suspend[always])[:4] == [1, 2, 3, 4]
    first_failure = out.of("alerts", kind="command_failed", iccid=always)[0]
    assert (first_failure["command_id"], first_failure["attempts"]) == (suspend[always], 4)
    assert "failed by provisioning" in first_failure["detail"]

    # the carrier reactivated a suspended card on its own: drift, reconciled, applied
    [drift] = out.of("alerts", kind="status_drift", iccid=drifting)
    assert drift["carrier_status"] == "active"
    assert (reconcile["action"], reconcile["reason"], reconcile["cause"]) == (
        "suspend",
        "quota",
        drift["cause"],
    )
    assert drifting_state["carrier"]["status"] == "suspended"
    assert f"drift: {drifting} reactivated itself (suspended -> active)" in log

    # every result and inventory message was accepted: keys, fields and times
    assert out.of("deadletter") == []
    assert status == 0, log
    assert "provision: stopped by SIGTERM" in log


async def test_resends_go_on_after_a_killed_worker_without_new_attempts_or_ids(
    kafka: str,
    start_worker: Callable[[dict[str, str]], WorkerProcess],
    producer: AIOKafkaProducer,
) -> None:
    """No provisioning answers: the suspend is sent again at each timeout. The worker is
    killed (kill -9) after the second send; its replacement recovers the pending command
    from the changelog and goes on with attempt 3, then gives up once. A send the dead
    worker may have made again after a crash repeats the same command id and attempt."""
    env = worker_env(
        kafka,
        STREAM_APP_COMMAND_ACK_TIMEOUT="2m",  # 6 s wall
        STREAM_APP_COMMAND_MAX_ATTEMPTS="3",
        **simulated_clock(START, SPEED, time.time()),
    )
    first = start_worker(env)
    settings = first.settings
    sim = iccid()
    out = await outputs_for(kafka, settings)
    try:
        await send(producer, settings, "subscriptions", subscription(sim))
        await wait_known(first, sim)
        await send(producer, settings, "usage", over_quota(sim, settings.clock().now()))
        await out.wait_for(lambda _: len(out.of("commands", iccid=sim, attempt=2)) >= 1, timeout=60)
        first.kill()
        attempts_before_the_kill = {c["attempt"] for c in out.of("commands", iccid=sim)}
        start_worker(env)
        await out.wait_for(lambda _: bool(out.of("alerts", kind="command_failed", iccid=sim)), timeout=120)
        await out.settle(8)  # a further timeout (6 s wall) would show a fourth send
    finally:
        await out.consumer.stop()

    assert attempts_before_the_kill == {1, 2}
    commands = out.of("commands", iccid=sim)
    assert {c["command_id"] for c in commands} == {commands[0]["command_id"]}
    assert sorted({c["attempt"] for c in commands}) == [1, 2, 3]
    for attempt in (1, 2, 3):
        same = [
            {k: c[k] for k in ("action", "reason", "trigger", "cause")}
            for c in commands
            if c["attempt"] == attempt
        ]
        assert same and all(s == same[0] for s in same), same
    failures = {a["alert_id"]: a for a in out.of("alerts", kind="command_failed", iccid=sim)}
    assert [a["attempts"] for a in failures.values()] == [3]
