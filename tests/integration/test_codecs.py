"""Carrier feeds written in Java: every compression codec Kafka offers is read, and input the
worker cannot decode holds its partition rather than crash-looping the worker.

The feed is the stock ``kafka-clients`` producer (tests/integration/java/CarrierFeed.java),
compiled at test time with the JDK's ``javac`` against the kafka-clients jar the local
broker already runs on.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from stream_app.settings import Settings

from .conftest import WorkerProcess, outputs_for, send, worker_env
from .test_api import get, get_once_stored, scrape
from .test_worker import GB, iccid, subscription, usage

pytestmark = pytest.mark.integration

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
SOURCE = Path(__file__).with_name("java") / "CarrierFeed.java"
JVM = ("-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")

JavaFeed = Callable[[str, str, list[tuple[str, str, Any]]], None]


@pytest.fixture(scope="session")
def java_feed(kafka_jars: Path, tmp_path_factory: pytest.TempPathFactory) -> JavaFeed:
    """Send (topic, key, value) with kafka-clients and the given compression.type."""
    javac, java = shutil.which("javac"), shutil.which("java")
    if javac is None or java is None:
        pytest.fail("a JDK (java and javac, 17+) is needed: it is what runs the local broker too")
    [client] = kafka_jars.glob("kafka-clients-*.jar")
    classes = tmp_path_factory.mktemp("carrier-feed")
    subprocess.run([javac, "-d", str(classes), "-cp", str(client), str(SOURCE)], check=True)
    log4j = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "log4j2.xml"

    def feed(bootstrap: str, codec: str, records: list[tuple[str, str, Any]]) -> None:
        lines = "".join(f"{topic}\t{key}\t{orjson.dumps(value).decode()}\n" for topic, key, value in records)
        classpath = f"{classes}:{kafka_jars}/*"
        result = subprocess.run(
            [
                java,
                *JVM,
                f"-Dlog4j2.configurationFile={log4j}",
                "-cp",
                classpath,
                "CarrierFeed",
                bootstrap,
                codec,
            ],
            input=lines.encode(),
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
        assert len(result.stdout.splitlines()) == len(records)  # one line per acknowledged record

    return feed


def partition_of(key: str, partitions: int) -> int:
    """Where Java's and aiokafka's default partitioner put a key."""
    partition: int = (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
    return partition


def feed_lines(settings: Settings, sim: str, tag: str) -> list[tuple[str, str, Any]]:
    """A SIM's subscription (1 GB, auto-suspend) and 1.2 GB of usage in three records."""
    return [
        (settings.topic("subscriptions"), sim, subscription(sim, GB)),
        *((settings.topic("usage"), sim, usage(sim, 400_000_000, f"{tag}-{n}")) for n in range(3)),
    ]


async def test_java_feeds_in_every_codec_are_counted(
    kafka: str,
    start_worker: Callable[[dict[str, str]], WorkerProcess],
    java_feed: JavaFeed,
) -> None:
    worker = start_worker(worker_env(kafka))
    settings = worker.settings
    sims = {codec: iccid() for codec in CODECS}
    out = await outputs_for(kafka, settings)
    try:
        for codec, sim in sims.items():
            await asyncio.to_thread(java_feed, kafka, codec, feed_lines(settings, sim, codec))
        await out.wait_for(lambda _: all(out.of("commands", iccid=sim) for sim in sims.values()))
    finally:
        await out.consumer.stop()
    for codec, sim in sims.items():
        [suspend] = out.of("commands", iccid=sim)
        assert (suspend["action"], suspend["reason"]) == ("suspend", "quota"), codec
        status, body = await get_once_stored(
            settings.web_port, f"/sims/{sim}", lambda b: b.get("used_bytes") == 1_200_000_000
        )
        assert (status, body["used_bytes"]) == (200, 1_200_000_000), codec
    assert worker.alive()


@pytest.fixture
def without_codecs(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A worker environment in which aiokafka finds no codec library (cramjam)."""
    shadow = tmp_path / "no-codecs"
    (shadow / "cramjam").mkdir(parents=True)
    (shadow / "cramjam" / "__init__.py").write_text('raise ImportError("hidden by the test")\n')
    yield {"PYTHONPATH": str(shadow)}


async def test_input_the_worker_cannot_decode_holds_its_partition_and_the_others_go_on(
    kafka: str,
    start_worker: Callable[[dict[str, str]], WorkerProcess],
    producer: AIOKafkaProducer,
    java_feed: JavaFeed,
    without_codecs: dict[str, str],
) -> None:
    # The reported crash: lz4 from kafka-clients, no lz4 library in the worker's Python.
    worker = start_worker(worker_env(kafka, **without_codecs))
    settings = worker.settings
    usage_topic, count = settings.topic("usage"), settings.partitions
    unreadable = iccid()
    held_partition = partition_of(unreadable, count)
    behind = next(s for s in iter(iccid, None) if partition_of(s, count) == held_partition)
    elsewhere = next(s for s in iter(iccid, None) if partition_of(s, count) != held_partition)
    port = settings.web_port
    out = await outputs_for(kafka, settings)
    try:
        await send(producer, settings, "subscriptions", subscription(unreadable, GB))
        await asyncio.to_thread(java_feed, kafka, "lz4", feed_lines(settings, unreadable, "lz4")[1:])
        for sim in (behind, elsewhere):  # uncompressed, after the lz4 batch
            await send(producer, settings, "subscriptions", subscription(sim, GB))
            await send(producer, settings, "usage", usage(sim, 1_200_000_000, f"{sim}-1"))
        await out.wait_for(lambda _: bool(out.of("commands", iccid=elsewhere)))
        status, body = await wait_held(port)
    finally:
        await out.consumer.stop()
    assert worker.alive()
    assert status == 503
    prefix = f"{usage_topic}[{held_partition}] held at offset 0: "
    assert [w for w in body["unready"] if "held" in w] == [
        prefix + "UnsupportedCodecError: Libraries for lz4 compression codec not found"
    ]
    assert scrape(port)["stream_app_held_partitions"] == 1.0
    assert not out.of("commands", iccid=unreadable) and not out.of("commands", iccid=behind)
    [line] = [line for line in worker.log().splitlines() if "cannot be decoded" in line]
    assert f"{usage_topic}[{held_partition}] from offset 0: a record batch cannot be decoded" in line

    # No crash loop: restarted, the worker fetches the batch again and holds it again.
    worker.stop()
    worker.start()
    status, body = await wait_held(port)
    assert worker.alive()
    assert (status, [w for w in body["unready"] if "held" in w]) == (
        503,
        [prefix + "UnsupportedCodecError: Libraries for lz4 compression codec not found"],
    )


async def wait_held(port: int, timeout: float = 60.0) -> tuple[int, Any]:
    deadline = time.monotonic() + timeout
    status, body = get(port, "/readyz")
    while not any("held" in w for w in body.get("unready", [])):
        if time.monotonic() > deadline:
            raise AssertionError(f"no partition held: /readyz {status} {body}")
        await asyncio.sleep(0.3)
        status, body = get(port, "/readyz")
    return status, body
