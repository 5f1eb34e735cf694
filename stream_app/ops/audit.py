"""`stream-app audit ICCID`: one SIM's audit trail as a table, from Kafka or a replay.

From Kafka, only the partition the ICCID hashes to is read (the audit topic holds every
SIM's changes and can be large): the producers place a message by aiokafka's default
partitioner, murmur2 of the key bytes, and the key is the upper-case ICCID. The
partition is read from its beginning to the end offset it had when the command
started. From a file, the JSON lines `stream-app replay` writes are filtered by topic
and key.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from ..settings import Settings
from .kafkaread import ReadError, partitions_of

COLUMNS = ("at", "change", "reason", "trigger", "cause", "before", "-> after", "status")
STALLED = 30.0
"""Seconds without reading anything before giving up on the partition."""


def partition_of(key: bytes, partitions: int) -> int:
    """The partition a producer with aiokafka's default partitioner sends ``key`` to."""
    every = list(range(partitions))
    chosen: int = DefaultPartitioner()(key, every, every)
    return chosen


async def from_topic(settings: Settings, topic: str, iccid: str) -> tuple[list[dict[str, Any]], str]:
    """The ICCID's audit records in offset order, and where they were read."""
    key = iccid.encode()
    tp = TopicPartition(topic, partition_of(key, len(await partitions_of(settings, topic))))
    consumer = AIOKafkaConsumer(
        **settings.kafka_options(), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        records: list[dict[str, Any]] = []
        progress = time.monotonic()
        while await consumer.position(tp) < end:
            batch = (await consumer.getmany(tp, timeout_ms=500, max_records=10_000)).get(tp, [])
            if batch:
                progress = time.monotonic()
            elif time.monotonic() - progress > STALLED:
                raise ReadError(f"nothing read from {topic}[{tp.partition}] for {STALLED:.0f} s")
            records += [orjson.loads(m.value) for m in batch if m.key == key and m.value is not None]
        return records, f"{topic}[{tp.partition}], offsets up to {end:,}"
    finally:
        await consumer.stop()


def from_lines(lines: Iterable[bytes], topic: str, iccid: str) -> tuple[list[dict[str, Any]], int]:
    """The ICCID's audit records among replay output lines, and the count of lines that
    were not JSON objects (skipped)."""
    records: list[dict[str, Any]] = []
    skipped = 0
    for raw in lines:
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            skipped += 1
            continue
        if not isinstance(line, dict):
            skipped += 1
        elif line.get("topic") == topic and line.get("key") == iccid and isinstance(line.get("value"), dict):
            records.append(line["value"])
    return records, skipped


def _reasons(reasons: Any) -> str:
    return ",".join(reasons) if reasons else "-"


def _command(record: dict[str, Any]) -> str:
    """The command the change went out with (R5): none when only the reasons changed."""
    change, before, after = record.get("change"), record.get("status_before"), record.get("status_after")
    if change == "cancelled":
        return "(+ cancel command)"
    if change == "reason_added" and (before, after) == ("active", "suspended"):
        return "(+ suspend command)"
    if change == "reason_cleared" and (before, after) == ("suspended", "active"):
        return "(+ restore command)"
    return ""


def render(records: list[dict[str, Any]]) -> str:
    """The README's audit table: one row per change, the command it sent at the end."""
    rows = [
        [
            str(r.get("at")),
            str(r.get("change")),
            str(r.get("reason")),
            str(r.get("trigger")),
            "null" if r.get("cause") is None else str(r["cause"]),
            _reasons(r.get("reasons_before")),
            _reasons(r.get("reasons_after")),
            str(r.get("status_after")),
        ]
        for r in records
    ]
    widths = [max([len(c) for c in (COLUMNS[i], *(row[i] for row in rows))]) for i in range(len(COLUMNS) - 2)]
    after = max([len(COLUMNS[6]) - 3, *(len(row[6]) for row in rows)])
    status = max([len(COLUMNS[7]), *(len(row[7]) for row in rows)])

    def line(cells: list[str], note: str) -> str:
        head = "  ".join(cell.ljust(width) for cell, width in zip(cells[:6], widths, strict=True))
        return f"{head}  -> {cells[6].ljust(after)}  {cells[7].ljust(status)}   {note}".rstrip()

    header = "  ".join(c.ljust(w) for c, w in zip(COLUMNS[:6], widths, strict=True))
    lines = [f"{header}  {COLUMNS[6].ljust(after + 3)}  {COLUMNS[7]}".rstrip()]
    lines += [line(row, _command(record)) for row, record in zip(rows, records, strict=True)]
    return "\n".join(lines)


def write(records: list[dict[str, Any]], as_json: bool, out: IO[str] = sys.stdout) -> None:
    if as_json:
        for record in records:
            out.write(orjson.dumps(record).decode() + "\n")
    else:
        out.write(render(records) + "\n")
