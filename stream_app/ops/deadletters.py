"""`stream-app deadletters`: what the worker refused, read back from the dead-letter topic.

Every partition is read from the beginning (or from ``--since``, through the broker's
time index) to the end offsets it had when the command started; the letters are shown
in the order they were written. ``--follow`` then goes on showing new ones until Ctrl-C
or SIGTERM. The time shown is the dead letter's Kafka timestamp: when it was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from ..domain.timeutil import format_time
from ..settings import Settings
from .kafkaread import ReadError, partitions_of
from .letters import EXCERPT, describe_payload, payload, text_of, where

STALLED = 30.0
"""Seconds without reading anything, short of the end, before giving up."""


@dataclass(frozen=True, slots=True)
class Filters:
    topics: frozenset[str] = frozenset()
    """Input topics whose letters are shown (empty: every one)."""
    errors: frozenset[str] = frozenset()
    since: datetime | None = None
    last: int | None = None
    """Only the last N matching letters (before following)."""

    def match(self, letter: Mapping[str, Any]) -> bool:
        return (not self.topics or letter.get("topic") in self.topics) and (
            not self.errors or letter.get("error") in self.errors
        )


@dataclass(frozen=True, slots=True)
class Letter:
    at: datetime
    key: str
    value: dict[str, Any]
    position: tuple[int, int]
    """Partition and offset on the dead-letter topic."""


def letter_of(message: ConsumerRecord[Any, Any]) -> Letter:
    """A letter from its Kafka message; a value that is no dead letter is shown as one
    with the error ``not_a_dead_letter``, rather than stopping the listing."""
    try:
        value = orjson.loads(message.value) if message.value is not None else None
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        value = {"topic": "", "error": "not_a_dead_letter", "detail": "this message is not a dead letter"}
    key = message.key.decode(errors="replace") if message.key else ""
    at = datetime.fromtimestamp(message.timestamp / 1000, UTC)
    return Letter(at, key, value, (message.partition, message.offset))


def render(letter: Letter, limit: int = EXCERPT) -> str:
    """Three lines: when, where and why; the detail; the payload."""
    value = letter.value
    key = f"  key {letter.key}" if letter.key else ""
    return (
        f"{format_time(letter.at.replace(microsecond=0))}  {where(value)}  {value.get('error', '?')}{key}\n"
        f"  {value.get('detail', '')}\n"
        f"  {describe_payload(value, limit)}"
    )


def as_json(letter: Letter) -> str:
    """The dead letter as written, plus ``at``, ``key`` and the payload as text."""
    text = text_of(payload(letter.value))
    return orjson.dumps(
        {**letter.value, "at": format_time(letter.at), "key": letter.key, "payload_text": text}
    ).decode()


class Reader:
    """Reads the dead-letter topic, all partitions, without a consumer group."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.consumer = AIOKafkaConsumer(
            **settings.kafka_options(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.partitions: list[TopicPartition] = []
        self.beyond: list[Letter] = []

    async def start(self, filters: Filters) -> dict[TopicPartition, int]:
        """Position every partition; returns the end offsets the listing stops at."""
        numbers = await partitions_of(self.settings, self.topic)
        await self.consumer.start()
        self.partitions = [TopicPartition(self.topic, p) for p in numbers]
        self.consumer.assign(self.partitions)
        ends: dict[TopicPartition, int] = await self.consumer.end_offsets(self.partitions)
        await self.consumer.seek_to_beginning(*self.partitions)
        if filters.since is not None:
            stamp = int(filters.since.timestamp() * 1000)
            found = await self.consumer.offsets_for_times(dict.fromkeys(self.partitions, stamp))
            for tp in self.partitions:
                self.consumer.seek(tp, found[tp].offset if found.get(tp) is not None else ends[tp])
        elif filters.last is not None and not (filters.topics or filters.errors):
            # without filters the last N overall lie within each partition's last N
            for tp in self.partitions:
                self.consumer.seek(tp, max(ends[tp] - filters.last, await self.consumer.position(tp)))
        return ends

    async def until(self, ends: Mapping[TopicPartition, int]) -> list[Letter]:
        """Every letter up to the end offsets, in the order they were written (those
        read beyond the ends are kept for ``follow``)."""
        letters: list[Letter] = []
        progress = time.monotonic()
        while not await self._reached(ends):
            batches = await self.consumer.getmany(timeout_ms=500, max_records=10_000)
            if any(batches.values()):
                progress = time.monotonic()
            elif time.monotonic() - progress > STALLED:
                raise ReadError(f"nothing read from {self.topic} for {STALLED:.0f} s")
            for tp, messages in batches.items():
                for message in messages:
                    (letters if message.offset < ends[tp] else self.beyond).append(letter_of(message))
        letters.sort(key=lambda letter: (letter.at, letter.position))
        return letters

    async def follow(self, show: Callable[[Letter], None], stop: asyncio.Event) -> None:
        """Show what came after the listing until ``stop`` is set."""
        for letter in self.beyond:
            show(letter)
        self.beyond = []
        while not stop.is_set():
            for messages in (await self.consumer.getmany(timeout_ms=500)).values():
                for message in messages:
                    show(letter_of(message))

    async def _reached(self, ends: Mapping[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await self.consumer.position(tp) < end:
                return False
        return True

    async def stop(self) -> None:
        await self.consumer.stop()


async def run(
    settings: Settings,
    topic: str,
    filters: Filters,
    follow: bool,
    json_lines: bool,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    """List (and follow) the dead letters; Ctrl-C or SIGTERM stops at once, exit 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    shown: Counter[str] = Counter()

    def show(letter: Letter) -> None:
        if filters.match(letter.value):
            shown[str(letter.value.get("error"))] += 1
            out.write((as_json(letter) if json_lines else render(letter)) + "\n")
            out.flush()

    async def listing() -> None:
        reader = Reader(settings, topic)
        try:
            matching = [x for x in await reader.until(await reader.start(filters)) if filters.match(x.value)]
            for letter in deque(matching, maxlen=filters.last) if filters.last is not None else matching:
                show(letter)
            if follow:
                await reader.follow(show, stop)
        finally:
            await reader.stop()

    work = asyncio.ensure_future(listing())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([work, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
        else:
            work.result()  # raises what went wrong
    finally:
        stopping.cancel()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)
    if not json_lines:
        ranked = sorted(shown.items(), key=lambda item: (-item[1], item[0]))
        by_error = ", ".join(f"{error} {count:,}" for error, count in ranked)
        total = sum(shown.values())
        noun = "dead letter" if total == 1 else "dead letters"
        err.write(f"{total:,} {noun} on {topic}" + (f": {by_error}" if by_error else "") + "\n")
    return 0
