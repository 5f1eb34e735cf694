"""Create the topics of the registry that do not exist yet, co-partitioned."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ..settings import Settings
from ..topics import REGISTRY


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics; refuse existing input topics with another partition count,
    since a SIM's state must live in one partition of one worker. Returns those created."""
    admin = AIOKafkaAdminClient(**settings.kafka_options(), request_timeout_ms=30000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = {settings.topic(spec.logical): spec for spec in REGISTRY}
        present = [name for name in wanted if name in existing]
        if present:
            for described in await admin.describe_topics(present):
                spec = wanted[described["topic"]]
                count = len(described["partitions"])
                if spec.direction != "out" and count != settings.partitions:
                    raise RuntimeError(
                        f"topic {described['topic']} has {count} partitions, "
                        f"STREAM_APP_PARTITIONS={settings.partitions}: inputs must be "
                        "co-partitioned"
                    )
        missing = [
            NewTopic(
                name,
                settings.partitions,
                settings.replication_factor,
                topic_configs={"cleanup.policy": "compact"} if spec.compacted else {},
            )
            for name, spec in wanted.items()
            if name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
        return [topic.name for topic in missing]
    finally:
        await admin.close()
