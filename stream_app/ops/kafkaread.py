"""What the operator commands that read a topic share: its partitions, and one error."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

from ..settings import Settings


class ReadError(RuntimeError):
    """A topic cannot be read: it does not exist, or the broker stops answering."""


async def partitions_of(settings: Settings, topic: str) -> list[int]:
    """The topic's partition numbers; ReadError when there is no such topic (asked so
    that a broker creating topics on first use does not create it)."""
    admin = AIOKafkaAdminClient(**settings.kafka_options(), request_timeout_ms=30_000)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            raise ReadError(f"topic {topic} does not exist")
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for p in described["partitions"])
