"""One real Kafka broker per test session; workers run as real processes.

The broker is the project's own (stream_app.tools.localbroker), on free ports in a temporary
folder, so a broker left running by `make run` is never touched. Nothing is skipped:
without jars, Maven collects them first.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream_app.domain.timeutil import format_time
from stream_app.settings import Settings
from stream_app.tools.admin import ensure_topics
from stream_app.tools.localbroker import BrokerError, LocalBroker, free_port
from stream_app.topics import REGISTRY, env_name

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kafka_jars() -> Path:
    """The broker's jars, collected by Maven on first use (cached in .kafka/libs)."""
    return LocalBroker(home=ROOT / ".kafka").ensure_jars()


@pytest.fixture(scope="session")
def kafka(kafka_jars: Path) -> Iterator[str]:
    jars = kafka_jars
    for attempt in (1, 2):  # a slow CI start gets one more try, on fresh ports and folder
        home = Path(tempfile.mkdtemp(prefix="stream-app-kafka-"))
        broker = LocalBroker(home=home, port=free_port(), controller_port=free_port(), libs=jars)
        try:
            bootstrap = broker.start(timeout=90)
        except BrokerError:
            broker.stop()
            shutil.rmtree(home, ignore_errors=True)
            if attempt == 2:
                raise
            continue
        try:
            yield bootstrap
        finally:
            broker.stop()
            shutil.rmtree(home, ignore_errors=True)
        return


def worker_env(kafka: str, **overrides: str) -> dict[str, str]:
    """A fresh app id and fresh topic names, so tests never see each other's messages."""
    suffix = uuid.uuid4().hex[:8]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "STREAM_APP_ID": f"stream-app-test-{suffix}",
        "STREAM_APP_PARTITIONS": "4",
        "STREAM_APP_TICK_INTERVAL": "1s",
        "STREAM_APP_STANDBY_REPLICAS": "0",
        "STREAM_APP_WEB_PORT": str(free_port()),
        "STREAM_APP_LOG_LEVEL": "info",
        # a killed worker's partitions move after this, not after Faust's default 60 s
        "STREAM_APP_FAUST_BROKER_SESSION_TIMEOUT": "10",
    }
    for spec in REGISTRY:
        env[env_name(spec.logical)] = f"{spec.default_name}.{suffix}"
    env.update(overrides)
    return env


def simulated_clock(start: datetime, speed: float, anchor: float) -> dict[str, str]:
    """Worker settings for a simulated clock showing ``start`` at wall time ``anchor``."""
    return {
        "STREAM_APP_CLOCK": "simulated",
        "STREAM_APP_CLOCK_START": format_time(start),
        "STREAM_APP_CLOCK_SPEED": str(speed),
        "STREAM_APP_CLOCK_ANCHOR": str(anchor),
    }


class WorkerProcess:
    """`stream-app worker` as a subprocess, started and killed like in production."""

    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        self.env = {**os.environ, **env, "STREAM_APP_DATA_DIR": str(data_dir)}
        self.settings = Settings.from_env(self.env)
        self.log_path = data_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        self.spawn()
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if not self.alive():
                raise RuntimeError(f"worker exited:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()  # never leave a worker running behind a failed test
                raise TimeoutError(f"worker not ready in {timeout} s:\n{self.log()}")
            time.sleep(0.2)

    def spawn(self) -> None:
        """Start the process without waiting for it (the chaos harness kills at any moment)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream_app", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def is_ready(self) -> bool:
        return b"[^Worker]: Ready" in self.log_path.read_bytes()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def kill(self) -> None:
        """kill -9: no clean shutdown, no final commit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(env: dict[str, str]) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"data-{len(started)}")
        # (tests calling this may run inside an event loop: create topics in a thread)
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, ensure_topics(worker.settings)).result()
        started.append(worker)  # before start: teardown stops it whatever happens
        worker.start()
        return worker

    yield start
    for worker in started:
        worker.stop()


class Outputs:
    """Reads every output topic from the beginning and keeps what it saw."""

    def __init__(self, kafka: str, settings: Settings) -> None:
        self.settings = settings
        self.names = {settings.topic(s.logical): s.logical for s in REGISTRY if s.direction == "out"}
        self.consumer = AIOKafkaConsumer(
            *self.names, bootstrap_servers=kafka, auto_offset_reset="earliest", enable_auto_commit=False
        )
        self.seen: list[tuple[str, dict[str, Any]]] = []

    async def wait_for(
        self, predicate: Callable[[list[tuple[str, dict[str, Any]]]], bool], timeout: float = 60.0
    ) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while not predicate(self.seen):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; saw {self.seen}")
            batches = await self.consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                self.seen += [(self.names[tp.topic], orjson.loads(m.value)) for m in messages]
        return self.seen

    async def settle(self, seconds: float = 3.0) -> list[tuple[str, dict[str, Any]]]:
        """Keep reading for a while, to see anything that should *not* have come."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batches = await self.consumer.getmany(timeout_ms=300)
            for tp, messages in batches.items():
                self.seen += [(self.names[tp.topic], orjson.loads(m.value)) for m in messages]
        return self.seen

    def of(self, logical: str, **match: Any) -> list[dict[str, Any]]:
        return [
            v for topic, v in self.seen if topic == logical and all(v.get(k) == m for k, m in match.items())
        ]


@pytest.fixture
async def producer(kafka: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=kafka, enable_idempotence=True)
    await p.start()
    yield p
    await p.stop()


async def send(
    producer: AIOKafkaProducer, settings: Settings, logical: str, value: Any, key: str | None = None
) -> None:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    iccid = key if key is not None else (value.get("iccid", "") if isinstance(value, dict) else "")
    await producer.send_and_wait(settings.topic(logical), raw, key=iccid.encode())


async def outputs_for(kafka: str, settings: Settings) -> Outputs:
    outputs = Outputs(kafka, settings)
    await outputs.consumer.start()
    return outputs


async def wait_known(worker: WorkerProcess, *iccids: str, timeout: float = 30.0) -> None:
    """Until the worker has applied each SIM's subscription (its /sims shows a plan).

    Topics are consumed independently, so a usage record sent after a subscription may
    still be processed first; tests that depend on that order wait here.
    """
    deadline = time.monotonic() + timeout
    for iccid in iccids:
        url = f"http://127.0.0.1:{worker.settings.web_port}/sims/{iccid}"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if orjson.loads(response.read()).get("plan"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{iccid}'s subscription was not applied in {timeout} s")
            await asyncio.sleep(0.2)
