"""Which partition a key goes to: Kafka's default partitioner (murmur2 of the key's
bytes), with the hashes of the keys seen lately remembered.

aiokafka computes murmur2 in pure Python, about 10 us a key here. A SIM told by its
pool hashes its ICCID three times in a few milliseconds (the check that its notice came
to its partition, then its command and its audit record, both keyed by it), so a pool
of 100,000 members running out cost 300,000 hashes, some 5 s of the worker's time under
load in a profile; remembered, it costs one per member. The worker's producer uses
``Partitioner`` (Faust's ``producer_partitioner``), so what it sends goes exactly where
aiokafka's own default partitioner would send it.
"""

from __future__ import annotations

import random
from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=16384)
def key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_of(key: str, partitions: int, remember: bool = True) -> int:
    """The partition of ``key`` in a topic of ``partitions`` partitions. ``remember``:
    False for a pass over more keys than are remembered, whose keys are not used again
    soon (it would push out those that are)."""
    raw = key.encode()
    return (key_hash(raw) if remember else int(murmur2(raw)) & 0x7FFFFFFF) % partitions


class Partitioner:
    """aiokafka's DefaultPartitioner, with the hashes remembered."""

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:  # as the default: any partition, an available one if any
            return random.choice(available or all_partitions)
        return all_partitions[key_hash(key) % len(all_partitions)]
