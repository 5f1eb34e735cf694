"""The worker's partitioner: Kafka's default, with the hashes remembered."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from stream_app.worker.routing import Partitioner, key_hash, partition_of


def test_every_key_goes_where_the_default_partitioner_sends_it() -> None:
    default, ours = DefaultPartitioner(), Partitioner()
    keys = [f"8986{n:016X}".encode() for n in range(0, 10**9, 7_777_777)] + [b"", b"tick", "池".encode()]
    for count in (1, 4, 8, 12, 64):
        everyone = list(range(count))
        for key in keys * 2:  # the second time from what was remembered
            assert ours(key, everyone, everyone) == default(key, everyone, everyone)
            if key:
                expected = default(key, everyone, everyone)
                assert (
                    partition_of(key.decode(), count) == partition_of(key.decode(), count, False) == expected
                )
    assert key_hash.cache_info().hits > 0
    assert ours(None, [0, 1, 2], [1]) == 1  # no key: an available partition


def test_the_worker_s_producer_uses_it() -> None:
    from stream_app.settings import Settings
    from stream_app.worker.app import Worker

    worker = Worker(Settings.from_env({}))
    assert isinstance(worker.app.producer.partitioner, Partitioner)
