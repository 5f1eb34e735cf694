"""`stream-app feed` against a real worker: the demo's suspends and dead letters, and the
feed's own summary checked against what the topics really hold."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections import Counter
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_app.domain import InvalidInput
from stream_app.pipeline import parse
from stream_app.tools.feed import FeedOptions, fleet

from .conftest import WorkerProcess, outputs_for, worker_env

pytestmark = pytest.mark.integration

SUMMARY = re.compile(
    rb"feed: done after [\d.]+ s: (\d+) subscriptions, (\d+) records sent \((\d+) duplicates, (\d+) bad\)"
)


async def read_topic(kafka: str, topic: str, partition_count: int) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of ``topic``, from the beginning to its current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(partition_count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        seen: list[tuple[bytes, bytes]] = []
        while sum([await consumer.position(tp) for tp in partitions]) < sum(ends.values()):
            batches = await consumer.getmany(timeout_ms=500)
            seen += [(m.key, m.value) for messages in batches.values() for m in messages]
        return seen
    finally:
        await consumer.stop()


async def test_the_feed_suspends_heavy_sims_dead_letters_bad_records_and_counts_what_it_sent(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess]
) -> None:
    env = worker_env(kafka)
    worker = start_worker(env)
    settings = worker.settings
    options = FeedOptions(sims=20, rate=250, duplicate_share=0.05, bad_share=0.03, seed=11, records=1500)
    sims = fleet(options)
    suspendable = {s.iccid for s in sims if s.heavy and s.auto_suspend}
    heavy = {s.iccid for s in sims if s.heavy}
    assert suspendable, "the seed must give at least one heavy auto-suspend SIM"
    out = await outputs_for(kafka, settings)
    try:
        feed = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stream_app",
            "feed",
            *("--sims", "20", "--rate", "250", "--records", "1500", "--seed", "11"),
            *("--duplicates", "0.05", "--bad", "0.03"),
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(feed.communicate(), 60)
        assert feed.returncode == 0, stderr.decode(errors="replace")
        summary = SUMMARY.search(stderr)
        assert summary is not None, stderr.decode(errors="replace")
        subscriptions, sent, duplicates, bad = map(int, summary.groups())
        assert (subscriptions, sent) == (20, 1500)
        assert b"feed: 1 s, " in stderr  # the progress line, once a second

        def arrived(_: object) -> bool:
            suspended = {c["iccid"] for c in out.of("commands", action="suspend", reason="quota")}
            return suspended >= suspendable and len(out.of("deadletter")) >= bad

        await out.wait_for(arrived, timeout=30)
        await out.settle(2)
    finally:
        await out.consumer.stop()

    # what the topics hold is what the feed says it sent
    usage = await read_topic(kafka, settings.topic("usage"), settings.partitions)
    assert len(usage) == sent
    assert sum(n - 1 for n in Counter(usage).values()) == duplicates  # exact repeats
    rejected = 0
    for key, value in usage:
        try:
            parse("usage", value, settings.max_message_bytes, key)
        except InvalidInput:
            rejected += 1
    assert rejected == bad
    assert len(await read_topic(kafka, settings.topic("subscriptions"), settings.partitions)) == subscriptions

    # and the worker did what the demo shows: heavy auto-suspend SIMs stopped, bad input dead-lettered
    suspends = out.of("commands", action="suspend")
    assert sorted(c["iccid"] for c in suspends) == sorted(suspendable)  # once each, no other
    assert {a["iccid"] for a in out.of("alerts", kind="quota_threshold", threshold=1.0)} == heavy
    letters = out.of("deadletter")
    assert len(letters) == bad
    assert {d["error"] for d in letters} <= {"invalid_json", "bad_iccid", "negative_bytes"}
