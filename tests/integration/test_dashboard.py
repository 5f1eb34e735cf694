"""The Grafana dashboard against a live worker: every metric it queries is on /metrics.

A labelled metric has no series until something is counted under a label, so the worker
first gets traffic that touches each of them: a subscription and usage past its quota
(input outcomes, usage bytes, thresholds, a suspend command, SIMs by status and reason,
latency and freshness), an expired plan (a retention charge) and a message that is not
JSON (a dead letter).
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from stream_app.domain.timeutil import format_time

from ..unit.test_deploy import dashboard_metric_names
from .conftest import WorkerProcess, outputs_for, send, worker_env
from .test_worker import GB, iccid, subscription, usage

pytestmark = pytest.mark.integration


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def sample_names(exposition: str) -> set[str]:
    """Sample names as Prometheus stores them: x_total, x_bucket, x_sum, plain gauges..."""
    return {sample.name for family in text_string_to_metric_families(exposition) for sample in family.samples}


def missing_from(names: set[str], wanted: set[str]) -> list[str]:
    """dashboard_metric_names() gives a histogram as ``x``, whose samples are ``x_bucket``;
    counters are already named ``x_total`` there, as in the scrape."""
    return sorted(n for n in wanted if n not in names and f"{n}_bucket" not in names)


async def test_every_metric_on_the_dashboard_is_served_on_metrics(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess], producer: AIOKafkaProducer
) -> None:
    wanted = dashboard_metric_names()
    assert wanted, "the dashboard names no metric"
    worker = start_worker(worker_env(kafka))
    settings = worker.settings
    over_quota, expired = iccid(), iccid()
    out = await outputs_for(kafka, settings)
    try:
        await send(producer, settings, "subscriptions", subscription(over_quota, GB))
        await send(producer, settings, "usage", usage(over_quota, 700_000_000, "dash-1"))
        await send(producer, settings, "usage", usage(over_quota, 400_000_000, "dash-2"))
        expires_at = format_time(datetime.now(UTC) - timedelta(days=2))
        await send(producer, settings, "subscriptions", subscription(expired, GB, expires_at=expires_at))
        await send(producer, settings, "usage", b"{not json", key=over_quota)
        await out.wait_for(
            lambda _: bool(
                out.of("commands", iccid=over_quota)
                and out.of("charges", iccid=expired)
                and out.of("deadletter")
            )
        )
    finally:
        await out.consumer.stop()

    # Gauges such as SIMs by status or consumer lag may be refreshed on a timer: poll.
    deadline = time.monotonic() + 60
    missing: list[str] = sorted(wanted)
    problem = ""
    while missing and time.monotonic() < deadline:
        try:
            missing = missing_from(sample_names(await asyncio.to_thread(scrape, settings.web_port)), wanted)
            problem = ""
        except (urllib.error.URLError, OSError, ValueError) as exc:
            problem = f"GET /metrics failed: {exc!r}"
        if missing:
            await asyncio.sleep(1)
    assert not problem, problem
    assert not missing, f"on the dashboard but not on /metrics: {missing}"
