"""The SIM lifecycle on the real broker: arrears, manual requests, expiry to cancellation."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from stream_app.domain.timeutil import format_time, parse_time

from .conftest import WorkerProcess, outputs_for, send, simulated_clock, wait_known, worker_env
from .test_worker import iccid, subscription

pytestmark = pytest.mark.integration


def now() -> str:
    return format_time(datetime.now(UTC))


async def test_arrears_and_manual_requests_round_trip(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess], producer: AIOKafkaProducer
) -> None:
    worker = start_worker(worker_env(kafka))
    settings = worker.settings
    debtor, managed = iccid(), iccid()
    out = await outputs_for(kafka, settings)
    try:
        for sim in (debtor, managed):
            await send(producer, settings, "subscriptions", subscription(sim, 10**9))
        await wait_known(worker, debtor, managed)
        await send(
            producer,
            settings,
            "billing",
            {"event_id": "bill-1", "iccid": debtor, "at": now(), "balance": -1200, "currency": "CNY"},
        )
        await send(
            producer,
            settings,
            "requests",
            {
                "request_id": "ops-1",
                "iccid": managed,
                "action": "suspend",
                "at": now(),
                "requested_by": "noc",
            },
        )
        # topics are consumed independently: let the arrears land before the refused request
        await out.wait_for(lambda _: len(out.of("commands", iccid=debtor)) == 1)
        await send(
            producer,
            settings,
            "requests",
            {"request_id": "ops-2", "iccid": debtor, "action": "suspend", "at": now(), "requested_by": "noc"},
        )
        await out.wait_for(lambda _: len(out.of("commands")) >= 2 and len(out.of("alerts")) >= 1)
        await send(
            producer,
            settings,
            "billing",
            {"event_id": "pay-1", "iccid": debtor, "at": now(), "balance": 0, "currency": "CNY"},
        )
        await send(
            producer,
            settings,
            "requests",
            {"request_id": "ops-3", "iccid": managed, "action": "resume", "at": now(), "requested_by": "noc"},
        )
        await out.wait_for(lambda _: len(out.of("commands")) >= 4)
        await out.settle(2)
    finally:
        await out.consumer.stop()
    steps = {
        sim: [(c["action"], c["reason"], c["trigger"], c["cause"]) for c in out.of("commands", iccid=sim)]
        for sim in (debtor, managed)
    }
    assert steps[debtor] == [
        ("suspend", "arrears", "balance", "bill-1"),
        ("restore", "arrears", "payment", "pay-1"),
    ]
    assert steps[managed] == [
        ("suspend", "manual", "request", "ops-1"),
        ("restore", "manual", "request", "ops-3"),
    ]
    [refused] = out.of("alerts", kind="request_rejected")
    assert (refused["iccid"], refused["cause"]) == (debtor, "ops-2")
    assert "arrears" in refused["detail"]


async def test_expiry_grace_and_cancellation_on_the_simulated_clock(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess], producer: AIOKafkaProducer
) -> None:
    # Four simulated days per wall second from 10 March: expiry on 15 March comes ~1 s
    # after the anchor, the cancellation one calendar month later ~9 s after it.
    start = parse_time("2026-03-10T00:00:00+08:00")
    anchor = time.time() + 8
    worker = start_worker(
        worker_env(kafka, **simulated_clock(start, 4 * 86400, anchor), STREAM_APP_GRACE_MONTHS="1")
    )
    settings = worker.settings
    sim = iccid()
    out = await outputs_for(kafka, settings)
    try:
        await send(
            producer,
            settings,
            "subscriptions",
            {
                **subscription(sim, 10**9),
                "updated_at": "2026-03-01T00:00:00Z",
                "expires_at": "2026-03-15T00:00:00+08:00",
            },
        )
        await out.wait_for(lambda _: len(out.of("commands", action="cancel")) == 1, timeout=90)
        await out.settle(3)
    finally:
        await out.consumer.stop()
    commands = [(c["action"], c["reason"], c["trigger"], c["at"]) for c in out.of("commands")]
    assert commands == [
        ("suspend", "expiry", "expiry_time", "2026-03-14T16:00:00Z"),
        ("cancel", "expiry", "grace_elapsed", "2026-04-14T16:00:00Z"),
    ]
    assert [c["month"] for c in out.of("charges")] == ["2026-03", "2026-04"]
    assert [a["kind"] for a in out.of("alerts")].count("grace_ending") == 1
    assert [a["change"] for a in out.of("audit")] == ["reason_added", "cancelled"]
