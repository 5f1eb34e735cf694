"""The RocksDB store's memory budget: shared out over the partitions, and reaching the
store Faust opens for the table."""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from faust.streams import _current_event
from faust.types import TP
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stream_app import codec
from stream_app.domain import apply_subscription, new_state, subscription
from stream_app.domain.memory import HASH_BYTES, remembered
from stream_app.settings import Settings, SettingsError
from stream_app.worker.app import Worker
from stream_app.worker.storage import (
    MIB,
    WRITE_BUFFERS,
    ChangelogFirstStore,
    ChangelogGap,
    Held,
    rocksdb_options,
)

from .scenario import GB, ICCID, subscription_msg, t


@pytest.mark.parametrize(("budget", "partitions"), [(256, 8), (1024, 12), (16, 1), (256, 3)])
def test_the_budget_is_shared_out_over_the_partitions(budget: int, partitions: int) -> None:
    options = rocksdb_options(budget, partitions)
    per_partition = (
        options["write_buffer_size"] * options["max_write_buffer_number"] + options["block_cache_size"]
    )
    assert options["max_write_buffer_number"] == WRITE_BUFFERS
    assert per_partition * partitions <= budget * MIB
    assert per_partition * partitions > budget * MIB * 0.99  # all of it, to rounding


def test_many_partitions_keep_a_usable_store() -> None:
    options = rocksdb_options(16, 1000)
    assert options["write_buffer_size"] == MIB and options["block_cache_size"] == MIB


def test_a_rocksdb_worker_opens_its_table_within_the_budget(tmp_path: Path) -> None:
    env = {
        "STREAM_APP_STORE": "rocksdb://",
        "STREAM_APP_DATA_DIR": str(tmp_path),
        "STREAM_APP_PARTITIONS": "4",
        "STREAM_APP_ROCKSDB_MEMORY_MIB": "64",
    }
    store: Any = Worker(Settings.from_env(env)).table.data
    assert store.rocksdb_options.write_buffer_size == 4 * MIB
    assert store.rocksdb_options.max_write_buffer_number == 2
    assert store.rocksdb_options.block_cache_size == 8 * MIB
    db = store._db_for_partition(1)  # opened with them: it takes writes and reads
    db.put(b"k", b"v")
    assert db.get(b"k") == b"v"


def test_a_budget_too_small_is_refused() -> None:
    with pytest.raises(SettingsError, match="STREAM_APP_ROCKSDB_MEMORY_MIB"):
        Settings.from_env({"STREAM_APP_ROCKSDB_MEMORY_MIB": "8"})


class _Message(NamedTuple):
    partition: int


class _Event:  # weakly referenced, as Faust's events are
    def __init__(self, partition: int) -> None:
        self.message = _Message(partition)


def test_a_sim_is_read_from_its_partitions_database_as_faust_would_read_it(tmp_path: Path) -> None:
    """The worker reads a SIM's keys straight from the partition's database (Faust's
    store internals: ``_db_for_partition``); what it reads is what Faust's store gives
    for the same keys under an event of that partition, and nothing of another one."""
    env = {
        "STREAM_APP_STORE": "rocksdb://",
        "STREAM_APP_DATA_DIR": str(tmp_path),
        "STREAM_APP_PARTITIONS": "8",
    }
    worker = Worker(Settings.from_env(env))
    policy = worker.policy
    now = t("2026-03-20T12:00:00+08:00")
    state = new_state(ICCID, now, policy)
    apply_subscription(state, subscription(subscription_msg(quota=GB)), now, policy)
    state.ids = remembered(os.urandom(672 * HASH_BYTES), int(now.timestamp() // 60) - 672 * 15, 15)
    entries = {key: value for key, value in codec.sim_entries(codec.stored_of(state, policy)) if value}
    assert len(entries) > 3  # card, profile, middle tier and segments: several keys
    store: Any = worker.table.data
    for key, value in entries.items():
        store._db_for_partition(2).put(key, value)

    own, other = _Event(2), _Event(5)
    direct = worker.load(ICCID, own)
    token = _current_event.set(weakref.ref(own))  # type: ignore[arg-type]
    try:
        through_faust = codec.load_sim(ICCID, store.get, policy)
    finally:
        _current_event.reset(token)
    assert direct is not None and through_faust is not None
    assert direct.state() == through_faust.state() == codec.load_sim(ICCID, entries.get, policy).state()  # type: ignore[union-attr]
    assert direct.hot.ids == state.ids
    assert worker.load(ICCID, other) is None
    assert worker.load(ICCID) is not None  # no event: found from the key


# --- writes held until the changelog has them ------------------------------------------


def _rocksdb_worker(tmp_path: Path) -> tuple[Worker, ChangelogFirstStore, str]:
    env = {
        "STREAM_APP_STORE": "rocksdb://",
        "STREAM_APP_DATA_DIR": str(tmp_path),
        "STREAM_APP_PARTITIONS": "4",
    }
    worker = Worker(Settings.from_env(env))
    store = worker.table.data
    assert isinstance(store, ChangelogFirstStore)
    return worker, store, worker.table.changelog_topic.get_topic_name()


def _reads(store: ChangelogFirstStore, partition: int, keys: list[bytes]) -> dict[bytes, bytes | None]:
    """What every way the worker reads the store says of ``keys``: they must agree."""
    read = store.reader(partition)
    token = _current_event.set(weakref.ref(_Event(partition)))  # type: ignore[arg-type]
    try:
        through_faust = {key: store.get(key) for key in keys}
        contained = {key for key in keys if key in store}
    finally:
        _current_event.reset(token)
    direct = {key: read(key) for key in keys}
    items = {key: value for key, value in store.items() if key in keys}
    assert direct == through_faust
    assert {key: value for key, value in direct.items() if value is not None} == items
    assert {key for key, value in direct.items() if value is not None} == contained
    return direct


def test_a_state_reaches_rocksdb_only_once_its_changelog_record_is_acknowledged(tmp_path: Path) -> None:
    worker, store, changelog = _rocksdb_worker(tmp_path)
    worker.app.assignor.assigned_actives = lambda: {TP(changelog, 1)}  # type: ignore[method-assign]
    database = store._db_for_partition(1)
    database.put(b"a", b"old")
    first = [store.hold(b"a", b"new"), store.hold(b"b", b"1")]
    assert _reads(store, 1, [b"a", b"b"]) == {b"a": b"new", b"b": b"1"}
    assert (database.get(b"a"), database.get(b"b")) == (b"old", None)  # a kill now loses nothing
    assert store.persisted_offset(TP(changelog, 1)) is None
    second = [store.hold(b"a", None)]  # deleted by the next write, before the first is acknowledged
    assert _reads(store, 1, [b"a", b"b"]) == {b"a": None, b"b": b"1"}

    store.acknowledged(1, first, 41)
    assert (database.get(b"a"), database.get(b"b")) == (b"new", b"1")
    assert store.persisted_offset(TP(changelog, 1)) == 41
    assert _reads(store, 1, [b"a", b"b"]) == {b"a": None, b"b": b"1"}  # the deletion is still held
    store.acknowledged(1, second, 42)
    assert database.get(b"a") is None and store.persisted_offset(TP(changelog, 1)) == 42
    assert store.held == {}


def test_after_a_refused_batch_nothing_more_is_stored_and_reads_stay_as_decided(tmp_path: Path) -> None:
    """The broker may have appended a batch it reported as failed: no persisted offset may
    move past it, so the store takes nothing more (the worker stops and recovers)."""
    worker, store, changelog = _rocksdb_worker(tmp_path)
    worker.app.assignor.assigned_actives = lambda: {TP(changelog, 2)}  # type: ignore[method-assign]
    database = store._db_for_partition(2)
    database.put(b"a", b"acknowledged")
    refused, later = [store.hold(b"a", b"refused")], [store.hold(b"b", b"later")]
    store.stop_storing()
    store.acknowledged(2, later, 8)
    assert (database.get(b"a"), database.get(b"b")) == (b"acknowledged", None)
    assert store.persisted_offset(TP(changelog, 2)) is None
    assert _reads(store, 2, [b"a", b"b"]) == {b"a": b"refused", b"b": b"later"}
    assert refused


def test_writes_acknowledged_after_a_rebalance_are_left_to_the_recovery_that_follows(tmp_path: Path) -> None:
    """Every rebalance is followed by a recovery of the active partitions from their
    persisted offsets: a write acknowledged after it must not move that offset (the
    recovery may already be past it, or another worker may own the partition), and held
    entries must not hide what the recovery stores. A partition whose database is closed
    is not reopened for an acknowledgement."""
    worker, store, changelog = _rocksdb_worker(tmp_path)
    worker.app.assignor.assigned_actives = lambda: {TP(changelog, 3)}  # type: ignore[method-assign]
    store._db_for_partition(3)  # open, and kept open by the rebalance
    before = [store.hold(b"k", b"1")]
    asyncio.run(store.on_rebalance(set(), set(), set(), 0))
    assert store.held == {}
    store.acknowledged(3, before, 9)
    assert store._db_for_partition(3).get(b"k") is None and store.persisted_offset(TP(changelog, 3)) is None
    store.set_persisted_offset(TP(changelog, 3), 9)  # the recovery read past it
    after = [store.hold(b"k", b"2")]
    store.acknowledged(3, after, 10)  # held since the rebalance: stored
    assert store._db_for_partition(3).get(b"k") == b"2" and store.persisted_offset(TP(changelog, 3)) == 10
    closed = [store.hold(b"l", b"1")]
    store.acknowledged(1, closed, 4)
    assert 1 not in store._dbs and store.held == {}


def test_a_write_appended_after_the_recovery_read_its_partition_stops_storing(tmp_path: Path) -> None:
    """Held before a rebalance, acknowledged only once the recovery had read the
    changelog: the store lacks it, so the next write must not persist an offset past it.
    Storing stops and the worker stops (writer.py); its restart's recovery reads it."""
    worker, store, changelog = _rocksdb_worker(tmp_path)
    worker.app.assignor.assigned_actives = lambda: {TP(changelog, 3)}  # type: ignore[method-assign]
    database = store._db_for_partition(3)
    before = [store.hold(b"k", b"1")]
    asyncio.run(store.on_rebalance(set(), set(), set(), 0))
    store.set_persisted_offset(TP(changelog, 3), 8)  # the recovery stopped short of offset 9
    store.acknowledged(3, before, 9)
    after = [store.hold(b"m", b"2")]
    with pytest.raises(ChangelogGap):
        store.acknowledged(3, after, 10)
    assert database.get(b"m") is None and store.persisted_offset(TP(changelog, 3)) == 8
    assert store.reader(3)(b"m") == b"2"  # reads stay as decided until the worker stops


def test_a_store_that_cannot_be_written_keeps_its_offset_and_its_reads(tmp_path: Path) -> None:
    _worker, store, changelog = _rocksdb_worker(tmp_path)
    good = store._db_for_partition(0)
    first, second = [store.hold(b"a", b"1")], [store.hold(b"b", b"2")]

    class Broken:
        def write(self, batch: Any) -> None:
            raise OSError("disk full")

    store._dbs[0] = Broken()
    with pytest.raises(OSError):
        store.acknowledged(0, first, 5)
    store._dbs[0] = good
    store.acknowledged(0, second, 6)  # past what is missing: not stored either
    assert store.persisted_offset(TP(changelog, 0)) is None
    assert store.reader(0)(b"a") == b"1" and store.reader(0)(b"b") == b"2"


@st.composite
def _histories(draw: st.DrawFn) -> list[tuple[str, bytes, bytes | None]]:
    steps = st.one_of(
        st.tuples(
            st.just("hold"), st.sampled_from([b"a", b"b", b"c"]), st.one_of(st.none(), st.binary(max_size=3))
        ),
        st.tuples(st.sampled_from(["send", "ack", "ack", "refuse", "rebalance"]), st.just(b""), st.none()),
    )
    return draw(st.lists(steps, max_size=40))


@settings(max_examples=100, deadline=None)
@given(history=_histories())
@example(  # a refused batch the broker appended after all, then a later one acknowledged
    history=[
        ("hold", b"a", b"1"),
        ("send", b"", None),
        ("hold", b"b", b"2"),
        ("send", b"", None),
        ("refuse", b"", None),
        ("ack", b"", None),
    ]
)
@example(  # held before a rebalance, appended after its recovery, then a newer write acknowledged
    history=[
        ("hold", b"a", b""),
        ("send", b"", None),
        ("rebalance", b"", None),
        ("hold", b"b", None),
        ("send", b"", None),
        ("ack", b"", None),
        ("ack", b"", None),
    ]
)
@example(  # acknowledged after a rebalance, then held and acknowledged again
    history=[("hold", b"a", b"1"), ("send", b"", None), ("rebalance", b"", None), ("ack", b"", None)]
)
def test_rocksdb_is_always_a_prefix_of_the_changelog_and_reads_what_was_decided(
    tmp_path_factory: pytest.TempPathFactory, history: list[tuple[str, bytes, bytes | None]]
) -> None:
    """Writes held, sent in batches, each batch acknowledged or refused in the order sent
    (as the producer settles one partition's batches), rebalances in between. After every
    step the database is exactly the changelog folded up to its persisted offset (a
    prefix: never a record the changelog lacks), and, until a rebalance or a refusal,
    every read sees the newest write."""
    worker, store, changelog = _rocksdb_worker(tmp_path_factory.mktemp("store"))
    worker.app.assignor.assigned_actives = lambda: {TP(changelog, 0)}  # type: ignore[method-assign]
    database = store._db_for_partition(0)
    keys = [b"a", b"b", b"c"]
    filling: list[Held] = []
    sent: list[list[Held]] = []
    log: list[Held] = []  # the changelog: every batch acknowledged (a refused one may be in it too)
    decided: dict[bytes, bytes | None] = dict.fromkeys(keys)
    reads_exact = True
    for action, key, value in history:
        if action == "hold":
            filling.append(store.hold(key, value))
            decided[key] = value
        elif action == "send" and filling:
            sent.append(filling)
            filling = []
        elif action == "ack" and sent:
            log += sent[0]
            with contextlib.suppress(ChangelogGap):  # the worker stops (writer.py)
                store.acknowledged(0, sent.pop(0), len(log) - 1)
        elif action == "refuse" and sent:
            log += sent.pop(0)  # the worst case: appended all the same
            store.stop_storing()
        elif action == "rebalance":
            asyncio.run(store.on_rebalance(set(), set(), set(), 0))
            reads_exact = False  # reads come from the store until the recovery catches up
        offset = store.persisted_offset(TP(changelog, 0))
        folded: dict[bytes, bytes | None] = dict.fromkeys(keys)
        for write in log[: offset + 1] if offset is not None else []:
            folded[write.key] = write.value
        assert {key: database.get(key) for key in keys} == folded
        if reads_exact:
            assert _reads(store, 0, keys) == decided


def test_a_scan_for_cards_sees_the_cards_and_pools_that_items_sees(tmp_path: Path) -> None:
    """The books are built from ``scan(codec.past_sim)``: the same cards and pool entries
    as Faust's ``items()``, held writes included, without reading the SIMs' ids."""
    worker, store, changelog = _rocksdb_worker(tmp_path)
    ticks = worker.ticks.get_topic_name()
    actives = {TP(topic, p) for topic in (changelog, ticks) for p in (0, 1)}
    worker.app.assignor.assigned_actives = lambda: actives  # type: ignore[method-assign]
    policy = worker.policy
    now = t("2026-03-20T12:00:00+08:00")
    for n, iccid in enumerate(["8986040000000000001", "89860400000000000010", "8986040000000000002"]):
        state = new_state(iccid, now, policy)
        apply_subscription(state, subscription(subscription_msg(iccid=iccid, quota=GB)), now, policy)
        state.ids = remembered(os.urandom(672 * HASH_BYTES), int(now.timestamp() // 60) - 672 * 15, 15)
        for key, value in codec.sim_entries(codec.stored_of(state, policy)):
            if value is not None:
                store._db_for_partition(n % 2).put(key, value)
    store._db_for_partition(0).put(codec.pool_key("fleet-a"), b"{}")
    store._db_for_partition(0).put(codec.member_key("fleet-a", "8986040000000000001"), b"{}")
    store.hold(b"8986040000000000002", None)  # a card deleted, not yet acknowledged
    store.hold(b"8986040000000000003", b"new card")
    store.hold(b"8986040000000000001/s9", b"a held segment")

    def wanted(entries: Any) -> dict[bytes, bytes]:
        return {k: v for k, v in entries if codec.is_card_key(k) or k.startswith(codec.POOL)}

    scanned = list(store.scan(codec.past_sim))
    assert wanted(scanned) == wanted(store.items())
    assert set(wanted(scanned)) == {
        b"8986040000000000001",
        b"89860400000000000010",
        b"8986040000000000003",
        codec.pool_key("fleet-a"),
        codec.member_key("fleet-a", "8986040000000000001"),
    }
    others = {key for key, _value in scanned if key not in wanted(scanned)}
    assert others == {b"8986040000000000001/s9"}  # only held ones: no stored id was read
