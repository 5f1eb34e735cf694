"""Fuzzed input through the real worker: no crash, no stalled partition, every invalid
message dead-lettered with its error, every valid one processed."""

from __future__ import annotations

import random
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream_app.domain import InvalidInput
from stream_app.domain.timeutil import format_time
from stream_app.pipeline import parse

from .conftest import WorkerProcess, outputs_for, wait_known, worker_env
from .test_worker import iccid, subscription

pytestmark = pytest.mark.integration

JUNK: list[Any] = [
    None,
    True,
    -1,
    0,
    2**63 - 1,
    1e308,
    "",
    "x" * 300,
    [],
    {},
    "2026-13-01T00:00:00Z",
    "89860012345678901234\n",
    "\uff18\uff19\uff18\uff16",
    -0.5,
    "NaN",
]


def mutations(valid: dict[str, Any], rng: random.Random) -> list[bytes]:
    """Messages derived from a valid one: fields dropped, replaced by junk, added; bytes cut."""
    raw = orjson.dumps(valid)
    out = [raw[: rng.randrange(1, len(raw))], raw + b"}", b"\xff\xfe" + raw, b"[" + raw + b"]"]
    for name in valid:
        out.append(orjson.dumps({k: v for k, v in valid.items() if k != name}))
        out += [orjson.dumps({**valid, name: junk}) for junk in rng.sample(JUNK, 3)]
    out.append(orjson.dumps({**valid, "extra": {"nested": [1, 2, 3]}}))  # valid: more fields allowed
    return out


def valid_usage(sim: str, n: int) -> dict[str, Any]:
    start = datetime.now(UTC) - timedelta(minutes=10)
    return {
        "record_id": f"fz-{n}",
        "iccid": sim,
        "carrier": "cmcc",
        "start": format_time(start),
        "end": format_time(start + timedelta(minutes=1)),
        "bytes_up": 10,
        "bytes_down": 5,
    }


def verdict(logical: str, raw: bytes, key: bytes) -> str | None:
    """The error the worker must give, or None for a valid message."""
    try:
        parse(logical, raw, 65536, key)
    except InvalidInput as exc:
        return exc.code
    return None


async def test_fuzzed_messages_on_every_input_topic(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess], producer: AIOKafkaProducer
) -> None:
    rng = random.Random(20261125)
    worker = start_worker(worker_env(kafka))
    settings = worker.settings
    sim = iccid()
    now = format_time(datetime.now(UTC))
    seeds = {
        "usage": valid_usage(sim, 0),
        "subscriptions": {**subscription(sim, 10**12), "updated_at": "2026-01-01T00:00:00Z"},
        "billing": {"event_id": "fz-b", "iccid": sim, "at": now, "balance": 100, "currency": "CNY"},
        "requests": {"request_id": "fz-q", "iccid": sim, "action": "resume", "at": now, "requested_by": "x"},
    }
    await producer.send_and_wait(
        settings.topic("subscriptions"), orjson.dumps(subscription(sim, 10**12)), key=sim.encode()
    )
    await wait_known(worker, sim)
    expected_errors: list[str] = []
    counted: dict[str, int] = {}  # record_id -> bytes: a repeated id counts once
    out = await outputs_for(kafka, settings)
    try:
        for logical, seed in seeds.items():
            for raw in mutations(seed, rng):
                error = verdict(logical, raw, sim.encode())
                if error is not None:
                    expected_errors.append(error)
                elif logical == "usage":
                    record = orjson.loads(raw)
                    counted.setdefault(record["record_id"], record["bytes_up"] + record["bytes_down"])
                await producer.send_and_wait(settings.topic(logical), raw, key=sim.encode())
        # the partition is not stalled: a valid record sent last is still counted
        last = valid_usage(sim, 99)
        await producer.send_and_wait(settings.topic("usage"), orjson.dumps(last), key=sim.encode())
        await out.wait_for(lambda _: len(out.of("deadletter")) >= len(expected_errors), timeout=90)
        await out.settle(3)
    finally:
        await out.consumer.stop()
    assert sorted(d["error"] for d in out.of("deadletter")) == sorted(expected_errors)
    assert worker.proc is not None and worker.proc.poll() is None  # still running
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/sims/{sim}", timeout=10) as r:
        body = orjson.loads(r.read())
    # the valid mutations (e.g. with extra fields) and the last record, each id counted once
    assert counted
    assert body["used_bytes"] == sum(counted.values()) + 15
