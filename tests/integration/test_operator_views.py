"""What an operator sees on a real broker: refused input in the worker's log and in
`stream-app deadletters`, and a SIM's trail in `stream-app audit`."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream_app.domain.timeutil import format_time
from stream_app.ops.audit import partition_of
from stream_app.settings import Settings
from stream_app.tools.admin import ensure_topics

from .conftest import WorkerProcess, outputs_for, send, wait_known, worker_env

pytestmark = pytest.mark.integration

GB = 1_000_000_000


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def subscription(sim: str) -> dict[str, Any]:
    return {
        "iccid": sim,
        "plan_id": "iot-1g",
        "quota_bytes": GB,
        "valid_from": "2026-01-01T00:00:00Z",
        "expires_at": None,
        "auto_suspend": True,
        "updated_at": format_time(datetime.now(UTC) - timedelta(days=1)),
    }


def usage(sim: str, total: int, record_id: str) -> dict[str, Any]:
    begin = datetime.now(UTC) - timedelta(minutes=10)
    return {
        "record_id": record_id,
        "iccid": sim,
        "carrier": "cmcc",
        "start": format_time(begin),
        "end": format_time(begin + timedelta(minutes=5)),
        "bytes_up": total // 2,
        "bytes_down": total - total // 2,
    }


async def wait_for_log(worker: WorkerProcess, pattern: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while not (found := re.search(pattern, worker.log_path.read_text(errors="replace"))):
        assert time.monotonic() < deadline, f"{pattern!r} not in the worker's log:\n{worker.log()}"
        await asyncio.sleep(0.3)
    return found.group(0).rstrip()  # Faust's text format ends a line with a space


async def test_refused_input_is_in_the_log_and_listed_and_a_suspension_in_the_audit(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess], producer: AIOKafkaProducer
) -> None:
    worker = start_worker(worker_env(kafka))
    settings, env = worker.settings, worker.env
    topic = settings.topic("usage")
    sim = "898602B9201650109563"  # letters: its lower-case key is another key
    out = await outputs_for(kafka, settings)
    try:
        await send(producer, settings, "subscriptions", subscription(sim))
        await wait_known(worker, sim)
        await send(producer, settings, "usage", usage(sim, 2 * GB, "over"))
        await send(producer, settings, "usage", b"not json", key=sim)
        await send(producer, settings, "usage", usage(sim, 1, "lower"), key=sim.lower())
        await out.wait_for(lambda _: len(out.of("deadletter")) == 2 and len(out.of("audit")) == 1)
    finally:
        await out.consumer.stop()
    letters = {letter["error"]: letter for letter in out.of("deadletter")}
    not_json, lower = letters["invalid_json"], letters["key_mismatch"]
    where = f"{topic}[{not_json['partition']}]@{not_json['offset']}"

    # the worker's log: one line each, where, why and the payload
    line = await wait_for_log(worker, rf"refused 1 message from {re.escape(topic)}: invalid_json; .*")
    assert f"e.g. {where}: not UTF-8 JSON" in line and line.endswith("payload (8 bytes): not json")
    line = await wait_for_log(worker, rf"refused 1 message from {re.escape(topic)}: key_mismatch; .*")
    assert '"record_id":"lower"' in line
    check_listing(env, settings, where, lower)
    await check_following(env, producer, settings, sim)

    trail = cli(env, "audit", sim)
    assert trail.returncode == 0, trail.stderr
    header, row = trail.stdout.splitlines()
    assert header.split() == ["at", "change", "reason", "trigger", "cause", "before", "->", "after", "status"]
    assert re.fullmatch(
        r"\S+Z +reason_added +quota +usage +over +- +-> quota +suspended +\(\+ suspend command\)", row
    )
    assert row.index("reason_added") == header.index("change") and row.index("->") == header.index("->")


def check_listing(env: dict[str, str], settings: Settings, where: str, lower: dict[str, Any]) -> None:
    listed = cli(env, "deadletters")
    assert listed.returncode == 0, listed.stderr
    assert f"  {where}  invalid_json" in listed.stdout and "  payload (8 bytes): not json\n" in listed.stdout
    everything = [orjson.loads(x) for x in cli(env, "deadletters", "--json").stdout.splitlines()]
    assert [x["at"] for x in everything] == sorted(x["at"] for x in everything)  # as written
    assert listed.stdout.index(everything[0]["error"]) < listed.stdout.index(everything[1]["error"])
    assert (
        listed.stderr == f"2 dead letters on {settings.topic('deadletter')}: invalid_json 1, key_mismatch 1\n"
    )
    scripted = cli(env, "deadletters", "--json", "--error", "key_mismatch")
    [letter] = [orjson.loads(x) for x in scripted.stdout.splitlines()]
    assert letter["deadletter_id"] == lower["deadletter_id"] and letter["key"] == ""
    assert orjson.loads(letter["payload_text"])["record_id"] == "lower"
    last = cli(env, "deadletters", "--json", "--last", "1").stdout.splitlines()
    assert [orjson.loads(x)["error"] for x in last] == [everything[1]["error"]]
    assert (
        len(cli(env, "deadletters", "--json", "--topic", "usage", "--since", "1h").stdout.splitlines()) == 2
    )
    assert cli(env, "deadletters", "--json", "--topic", "sim.billing").stdout == ""
    later = format_time(datetime.now(UTC) + timedelta(hours=1))
    assert cli(env, "deadletters", "--json", "--since", later).stdout == ""


async def check_following(
    env: dict[str, str], producer: AIOKafkaProducer, settings: Settings, sim: str
) -> None:
    """What comes next shows up; Ctrl-C ends it cleanly."""
    follow = subprocess.Popen(
        [sys.executable, "-m", "stream_app", "deadletters", "--follow", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        seen = [orjson.loads(await asyncio.to_thread(follow.stdout.readline)) for _ in range(2)]
        await send(producer, settings, "usage", b"\xff\xfe binary", key=sim)
        seen.append(orjson.loads(await asyncio.to_thread(follow.stdout.readline)))
        follow.send_signal(signal.SIGINT)
        _, err = follow.communicate(timeout=30)
    finally:
        follow.kill()
    assert {x["error"] for x in seen[:2]} == {"invalid_json", "key_mismatch"}
    assert seen[2]["error"] == "invalid_json"
    assert seen[2]["payload_text"] is None
    assert follow.returncode == 0 and "Traceback" not in err, err


async def test_audit_reads_only_the_partition_the_iccid_hashes_to(kafka: str) -> None:
    env = {**os.environ, **worker_env(kafka)}
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    topic = settings.topic("audit")
    sims = ["89860012345678900001", "89860012345678900002", "898602B9201650109563"]

    def record(sim: str, at: str, cause: str) -> bytes:
        return orjson.dumps(
            {
                "audit_id": "0" * 32,
                "iccid": sim,
                "at": at,
                "change": "reason_added",
                "reason": "arrears",
                "trigger": "balance",
                "cause": cause,
                "reasons_before": [],
                "reasons_after": ["arrears"],
                "status_before": "active",
                "status_after": "suspended",
            }
        )

    producer = AIOKafkaProducer(bootstrap_servers=kafka)  # the default partitioner, as the workers use
    await producer.start()
    try:
        for n, sim in enumerate(sims * 2):
            await producer.send_and_wait(
                topic, record(sim, f"2026-03-0{n + 1}T00:00:00Z", f"c{n}"), key=sim.encode()
            )
        # a record that no producer would put there: the command must not even read it
        home = partition_of(sims[0].encode(), settings.partitions)
        decoy = (home + 1) % settings.partitions
        await producer.send_and_wait(
            topic, record(sims[0], "2026-03-09T00:00:00Z", "decoy"), key=sims[0].encode(), partition=decoy
        )
    finally:
        await producer.stop()
    trail = cli(env, "audit", sims[0].lower())
    assert trail.returncode == 0 and trail.stderr == "", trail.stderr
    rows = trail.stdout.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["2026-03-01T00:00:00Z", "2026-03-04T00:00:00Z"]
    assert [row.split()[4] for row in rows] == ["c0", "c3"]
    as_json = [orjson.loads(x) for x in cli(env, "audit", sims[2], "--json").stdout.splitlines()]
    assert [x["cause"] for x in as_json] == ["c2", "c5"]
    nothing = cli(env, "audit", "89860099999999999999")
    assert nothing.returncode == 0 and "no audit records for 89860099999999999999 in" in nothing.stderr
