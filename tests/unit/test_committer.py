"""Faust's consumer commits the ledger's frontiers, and the methods replaced still exist."""

from __future__ import annotations

import inspect
from collections import defaultdict
from typing import Any

from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP

from stream_app.worker.committer import ledger_consumer
from stream_app.worker.offsets import Ledger, Partition


def test_the_replaced_methods_keep_faust_0_15_signatures() -> None:
    # A Faust upgrade that renames or reshapes them would silently bring its own
    # commits back; this makes it loud instead.
    expected = {
        "_filter_tps_with_pending_acks": ["self", "topics"],
        "_filter_committable_offsets": ["self", "tps"],
    }
    for name, parameters in expected.items():
        method = getattr(FaustConsumer, name)
        assert list(inspect.signature(method).parameters) == parameters
        assert getattr(AIOKafkaConsumer, name) is method  # the driver does not override it
    assert "_filter_committable_offsets(tps)" in inspect.getsource(FaustConsumer._commit_tps).replace(
        "self.", ""
    )
    assert "_filter_tps_with_pending_acks(topics)" in inspect.getsource(FaustConsumer.force_commit).replace(
        "self.", ""
    )


def test_the_worker_s_consumer_commits_the_ledger() -> None:
    from stream_app.settings import Settings
    from stream_app.worker.app import Worker

    worker = Worker(Settings.from_env({}))
    consumer = worker.app.consumer  # created, not started: no broker needed
    assert isinstance(consumer, AIOKafkaConsumer)
    assert type(consumer)._filter_committable_offsets is not FaustConsumer._filter_committable_offsets
    ledger = worker.ledger
    usage = Partition(worker.settings.topic("usage"), 0)
    ledger.begin(usage, 0, ledger.generation)
    ledger.done(ledger.ticket(usage, 7, ledger.generation), True)
    consumer.assignment = lambda: {TP(*usage)}  # type: ignore[method-assign]
    assert consumer._filter_committable_offsets(consumer._filter_tps_with_pending_acks()) == {TP(*usage): 7}


class FakeConsumer:
    """The few attributes of Faust's consumer the replaced methods read."""

    def __init__(self, assigned: set[TP], committed: dict[TP, int]) -> None:
        self._assigned = assigned
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[TP, set[int]] = defaultdict(set)
        self._gap: dict[TP, Any] = {}
        self._committed_offset: defaultdict[TP, int | None] = defaultdict(lambda: None, committed)

    def assignment(self) -> set[TP]:
        return self._assigned


def test_commits_are_the_ledger_frontiers_not_faust_acks() -> None:
    ledger = Ledger()
    usage0, usage1, changelog = TP("sim.usage", 0), TP("sim.usage", 1), TP("app-sims-changelog", 0)
    for tp, start in ((usage0, 0), (usage1, 40)):
        ledger.begin(Partition(*tp), start, ledger.generation)
    ledger.done(ledger.ticket(Partition(*usage0), 25, ledger.generation), True)
    cls = ledger_consumer(FakeConsumer, ledger, frozenset({"sim.usage"}))
    consumer = cls({usage0, usage1, changelog}, {usage1: 40})
    consumer._acked[usage0] = [0, 1, 2, 3, 999]  # Faust would commit 4; the ledger says 25
    consumer._acked_index[usage0] = {0, 1, 2, 3, 999}

    tps = list(consumer._filter_tps_with_pending_acks())
    assert sorted(tps) == [usage0, usage1]  # never the changelog, always every input
    assert list(consumer._filter_tps_with_pending_acks({usage1})) == [usage1]
    assert consumer._filter_committable_offsets(tps) == {usage0: 25}  # usage1 is at its commit
    assert not consumer._acked.get(usage0) and not consumer._acked_index.get(usage0)
