"""The Grafana dashboard against a live worker and a real Prometheus scraping it.

A labelled metric has no series until something is counted under a label, and some
panels only show data after work of a certain kind, so the worker first gets traffic
that touches each of them: a subscription and usage past its quota (input outcomes,
usage bytes, thresholds, a suspend command, SIMs by status and reason, latency and
freshness), an expired plan (a retention charge), a message that is not JSON (a dead
letter), and a month start crossed by its simulated clock (a sweep that restores the
suspended SIM). A slow trickle of usage keeps the rates alive while the panels are asked.

Then every metric the dashboard names must be on /metrics, and every panel's query,
with Grafana's variables filled in, must return data from Prometheus' HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from stream_app.domain.timeutil import format_time, parse_time
from stream_app.settings import Settings
from stream_app.tools.admin import ensure_topics
from stream_app.tools.localbroker import free_port

from ..unit.test_deploy import (
    all_panels,
    dashboard,
    dashboard_metric_names,
    grafana_to_promql,
    prometheus_binary,
)
from .conftest import WorkerProcess, outputs_for, send, simulated_clock, worker_env
from .test_worker import GB, iccid, subscription, usage

pytestmark = pytest.mark.integration

MONTH_END = parse_time("2026-03-31T23:59:00+08:00")
"""The simulated clock starts 60 s before a month ends (Shanghai) ..."""
SPEED = 2
STARTUP = 25.0
"""... at this many wall seconds after the test starts, so the worker is running and
the suspended SIM is suspended before midnight comes, about a minute into the test."""
SCRAPE = "1s"
RATE_INTERVAL = "1m"
"""$__rate_interval as Grafana sets it for deploy/'s 15 s scrape interval (4 x 15 s)."""


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


class Prometheus:
    """Debian's prometheus server, scraping one worker as deploy/prometheus does (job
    ``stream-app``), every second, with its data in a temporary folder."""

    def __init__(self, binary: str, home: Path, target: str) -> None:
        self.port = free_port()
        self.home = home
        config = {
            "global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
            "scrape_configs": [{"job_name": "stream-app", "static_configs": [{"targets": [target]}]}],
        }
        (home / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.command = [
            binary,
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        with (self.home / "prometheus.log").open("wb") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("prometheus did not start:\n" + (self.home / "prometheus.log").read_text())
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query through the HTTP API: the result's series."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = orjson.loads(response.read())
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass(frozen=True)
class Live:
    worker: WorkerProcess
    prometheus: Prometheus


async def trickle(producer: AIOKafkaProducer, settings: Settings) -> None:
    """A usage record every half second, each for a SIM never seen: every one is counted
    and gets an alert (unknown_sim), so freshness and decision latency keep moving."""
    for n in range(10**6):
        start = settings.clock().now() - timedelta(minutes=6)
        await send(producer, settings, "usage", usage(iccid(), 1000, f"trickle-{n}", start=start))
        await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
async def live(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    """A worker that has done every kind of work the dashboard shows, and a Prometheus
    that has scraped it all along."""
    binary = prometheus_binary("prometheus")
    home = tmp_path_factory.mktemp("dashboard")
    env = worker_env(kafka, **simulated_clock(MONTH_END, SPEED, time.time() + STARTUP))
    worker = WorkerProcess(env, home / "worker")
    settings = worker.settings
    prometheus = Prometheus(binary, home, f"127.0.0.1:{settings.web_port}")
    producer = AIOKafkaProducer(bootstrap_servers=kafka)
    feeding: asyncio.Task[None] | None = None
    try:
        prometheus.start()  # before the worker, so it sees every counter from zero
        await ensure_topics(settings)
        await asyncio.to_thread(worker.start)
        await producer.start()
        over_quota, expired = iccid(), iccid()
        out = await outputs_for(kafka, settings)
        try:
            before = MONTH_END - timedelta(minutes=10)
            plan = {"updated_at": "2026-03-01T00:00:00Z"}
            await send(producer, settings, "subscriptions", {**subscription(over_quota, GB), **plan})
            await send(producer, settings, "usage", usage(over_quota, 700_000_000, "dash-1", start=before))
            await send(producer, settings, "usage", usage(over_quota, 400_000_000, "dash-2", start=before))
            lapsed = format_time(MONTH_END - timedelta(days=2))
            await send(
                producer, settings, "subscriptions", {**subscription(expired, GB, expires_at=lapsed), **plan}
            )
            await send(producer, settings, "usage", b"{not json", key=over_quota)
            feeding = asyncio.ensure_future(trickle(producer, settings))
            await out.wait_for(
                lambda _: bool(
                    out.of("commands", iccid=over_quota, action="suspend")
                    and out.of("charges", iccid=expired)
                    and out.of("deadletter")
                    and out.of("commands", iccid=over_quota, action="restore", trigger="month_start")
                ),
                timeout=150,
            )
        finally:
            await out.consumer.stop()
        yield Live(worker, prometheus)
    finally:
        if feeding is not None:
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeding
        await producer.stop()
        worker.stop()
        prometheus.stop()


async def test_every_metric_on_the_dashboard_is_served_on_metrics(live: Live) -> None:
    wanted = dashboard_metric_names()
    assert wanted, "the dashboard names no metric"
    port = live.worker.settings.web_port
    # Gauges such as SIMs by status or consumer lag may be refreshed on a timer: poll.
    deadline = time.monotonic() + 60
    missing: list[str] = sorted(wanted)
    problem = ""
    while missing and time.monotonic() < deadline:
        try:
            missing = missing_from(sample_names(await asyncio.to_thread(scrape, port)), wanted)
            problem = ""
        except (urllib.error.URLError, OSError, ValueError) as exc:
            problem = f"GET /metrics failed: {exc!r}"
        if missing:
            await asyncio.sleep(1)
    assert not problem, problem
    assert not missing, f"on the dashboard but not on /metrics: {missing}"


def panel_queries() -> list[tuple[str, str]]:
    """(panel title and refId, the query Grafana would send) for every panel's target."""
    return [
        (f"{panel['title']} [{target['refId']}]", grafana_to_promql(target["expr"], RATE_INTERVAL))
        for panel in all_panels(dashboard()["panels"])
        for target in panel.get("targets", [])
    ]


def has_data(series: list[dict[str, Any]]) -> bool:
    """At least one series with a number (a quantile over no observations is NaN: an empty panel)."""
    return any(not math.isnan(float(s["value"][1])) for s in series)


async def test_every_panel_s_query_returns_data_from_prometheus(live: Live) -> None:
    prometheus, port = live.prometheus, live.worker.settings.web_port
    queries = panel_queries()
    assert len(queries) >= 20
    [worker] = await asyncio.to_thread(prometheus.query, 'up{job="stream-app"}')
    # the dashboard's $instance variable: label_values(up{job="stream-app"}, instance)
    assert worker["metric"]["instance"] == f"127.0.0.1:{port}"
    empty = dict(queries)
    deadline = time.monotonic() + 60  # a gauge set on the next tick, a scrape or two away
    while empty and time.monotonic() < deadline:
        for title, expr in list(empty.items()):
            if has_data(await asyncio.to_thread(prometheus.query, expr)):
                del empty[title]
        if empty:
            await asyncio.sleep(1)
    assert not empty, "panels without data:\n" + "\n".join(f"{t}: {q}" for t, q in empty.items())
