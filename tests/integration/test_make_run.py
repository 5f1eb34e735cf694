"""`make run` on a local broker moved to other ports: every client follows it.

Only the local broker's settings change (STREAM_APP_KAFKA_PORT, _CONTROLLER_PORT, _HOME);
KAFKA_BOOTSTRAP_SERVERS is unset, as on a newcomer's machine whose 9092 is taken. The
broker is the test's own (free ports, a temporary folder), stopped at the end.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from stream_app.domain.timeutil import format_time
from stream_app.tools.localbroker import free_port

from .test_worker import iccid

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SNIPPET = re.compile(r"<<'PY'\n(.*?\bAIOKafkaProducer\(.*?)\nPY\n", re.S)


def readme_producer_snippet() -> str:
    """The documentation's producer example (README, or docs/ once it moves there)."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]:
        if page.exists() and (found := SNIPPET.search(page.read_text())):
            return found.group(1)
    raise AssertionError("no producer snippet (a <<'PY' heredoc with AIOKafkaProducer) in the docs")


@pytest.fixture
def moved_broker_env(kafka_jars: Path, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "kafka"
    home.mkdir()
    (home / "libs").symlink_to(kafka_jars)  # the session's jars: no second Maven run
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")
    }
    env.update(
        STREAM_APP_KAFKA_PORT=str(free_port()),
        STREAM_APP_KAFKA_CONTROLLER_PORT=str(free_port()),
        STREAM_APP_KAFKA_HOME=str(home),
        STREAM_APP_WEB_PORT=str(free_port()),
        STREAM_APP_DATA_DIR=str(tmp_path / "data"),
        STREAM_APP_PARTITIONS="4",
        STREAM_APP_STANDBY_REPLICAS="0",
    )
    return env


def test_make_run_and_the_readme_producer_follow_the_local_broker_s_port(
    moved_broker_env: dict[str, str],
) -> None:
    env = moved_broker_env
    bootstrap = f"127.0.0.1:{env['STREAM_APP_KAFKA_PORT']}"
    try:
        demo = "DEMO_ARGS=--sims 50 --rate 100 --bad 0.1 --duration 10"
        result = subprocess.run(
            ["make", "--no-print-directory", "-C", str(ROOT), "run", demo],
            env=env,
            capture_output=True,
            timeout=600,
            check=False,
        )
        out = result.stdout.decode()
        assert result.returncode == 0, out + result.stderr.decode()
        assert f"Kafka is serving at {bootstrap}" in out  # the broker ...
        assert "topics created: sim.usage, " in out  # ... topic creation ...
        summary = re.search(r"demo: 50 subscriptions, (\d+) records sent.*?(\d+) dead letters", out)
        # ... the demo's worker and feed (records counted) and its watchers (dead letters read)
        assert summary is not None and int(summary.group(1)) > 0 and int(summary.group(2)) > 0, out

        # The README's producer, from "another terminal" with the same environment.
        sim, now = iccid(), datetime.now(UTC)
        start = format_time(now - timedelta(minutes=5))
        produced = subprocess.run(
            [sys.executable, "-", sim, start, format_time(now)],
            input=readme_producer_snippet().encode(),
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert produced.returncode == 0, produced.stderr.decode()
        keys = asyncio.run(read_keys(bootstrap, "sim.subscriptions", "sim.usage"))
        assert keys == {"sim.subscriptions": [sim], "sim.usage": [sim]}
    finally:
        subprocess.run(
            [sys.executable, "-m", "stream_app", "broker", "stop"], env=env, capture_output=True, check=False
        )


async def read_keys(bootstrap: str, *topics: str) -> dict[str, list[str]]:
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    keys: dict[str, list[str]] = {}
    try:
        for _ in range(20):
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                for message in messages:
                    keys.setdefault(tp.topic, []).append(orjson.loads(message.value)["iccid"])
            if len(keys) == len(topics):
                break
    finally:
        await consumer.stop()
    return keys
