"""The dedupe memory's tiers and how a SIM's entries are written (R2, DESIGN "Scale").

What a usage record rewrites must not grow with the ids a SIM remembers, and a crash
between any two of a write's entries must never make a counted record look new.
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app import codec
from stream_app.domain import Policy, apply_subscription, new_state, subscription, usage_record
from stream_app.domain.engine import apply_usage
from stream_app.domain.memory import (
    HASH_BYTES,
    MIDDLE_MAX,
    RECENT_MAX,
    IdMemory,
    Segment,
    id_hash,
    remembered,
)
from stream_app.domain.timeutil import format_time

from .scenario import GB, ICCID, subscription_msg, t

NOW = t("2026-03-20T12:00:00+08:00")
QUARTER_HOUR = 15


def test_ids_move_to_older_tiers_and_each_tier_stays_bounded() -> None:
    memory = IdMemory()
    digests = [os.urandom(HASH_BYTES) for _ in range(672)]
    for n, digest in enumerate(digests):
        memory.add(digest, n * QUARTER_HOUR, 0, 20_000)
    assert all(d in memory for d in digests)
    assert len(memory) == 672
    assert len(memory.recent) <= RECENT_MAX * HASH_BYTES
    assert len(memory.middle) <= MIDDLE_MAX * HASH_BYTES
    assert [len(s.hashes) // HASH_BYTES for s in memory.segments] == [MIDDLE_MAX] * 5
    assert [s.number for s in memory.written] == [0, 1, 2, 3, 4] and memory.middle_changed
    assert os.urandom(HASH_BYTES) not in memory


def test_an_id_is_never_found_out_of_step_with_the_eight_byte_grid() -> None:
    # A hash straddling two remembered ones is not remembered.
    one, two = b"\x01" * 4 + b"\x02" * 4, b"\x03" * 4 + b"\x04" * 4
    for memory in (IdMemory(middle=one + two), IdMemory(segments=(Segment(0, 5, one + two),))):
        assert one in memory and two in memory
        assert b"\x02" * 4 + b"\x03" * 4 not in memory


def test_segments_beyond_the_horizon_and_beyond_the_cap_are_dropped() -> None:
    memory = IdMemory()
    for n in range(2000):
        memory.add(os.urandom(HASH_BYTES), n, cutoff_minute=n - 700, cap=20_000)
    newest = [s.newest for s in memory.segments]
    assert newest and min(newest) >= 1999 - 700 - MIDDLE_MAX - RECENT_MAX
    assert len(memory.dropped) == len(memory.written) - len(memory.segments)
    capped = IdMemory()
    for n in range(2000):
        capped.add(os.urandom(HASH_BYTES), n, cutoff_minute=0, cap=300)
    assert len(capped) <= 300 + MIDDLE_MAX + RECENT_MAX


def _steady_state(records: int, policy: Policy) -> tuple[dict[bytes, bytes], list[int]]:
    """A SIM fed one record every 15 minutes through the codec; bytes written per record."""
    state = new_state(ICCID, NOW - timedelta(days=8), policy)
    apply_subscription(state, subscription(subscription_msg(quota=100 * GB)), NOW - timedelta(days=8), policy)
    table: dict[bytes, bytes] = {}
    written: list[int] = []

    def write(stored: codec.Stored) -> None:
        entries = codec.sim_entries(stored)
        written.append(sum(len(key) + len(value or b"") for key, value in entries))
        for key, value in entries:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value

    write(codec.stored_of(state, policy))
    start = NOW - timedelta(minutes=QUARTER_HOUR * records)
    for n in range(records):
        begin = start + timedelta(minutes=QUARTER_HOUR * n)
        record = usage_record(
            {
                "record_id": f"cdr-{n}",
                "iccid": ICCID,
                "carrier": "cmcc",
                "start": format_time(begin),
                "end": format_time(begin + timedelta(minutes=14)),
                "bytes_up": 100,
                "bytes_down": 900,
            }
        )
        stored = codec.load_sim(ICCID, table.get, policy)
        assert stored is not None
        whole = stored.state()
        apply_usage(whole, record, begin + timedelta(minutes=QUARTER_HOUR), policy)
        after = codec.stored_of(whole, policy)
        after.profile_changed = False  # as the fast lane writes it: the profile unchanged
        after.embedded = stored.embedded
        write(after)
    return table, written


def test_what_a_record_writes_does_not_grow_with_the_ids_remembered() -> None:
    policy = Policy()
    table, written = _steady_state(3 * 672, policy)
    stored = codec.load_sim(ICCID, table.get, policy)
    # ids of the horizon, plus at most a segment partly beyond it and the tiers not yet archived
    assert stored is not None and 672 <= len(stored.hot.ids) <= 672 + 2 * MIDDLE_MAX + RECENT_MAX
    # over the last week: a full horizon of ids remembered, yet each record writes about
    # 200 bytes on average (DESIGN target: 256), no more than in the first week
    last_week, first_week = written[-672:], written[1:673]
    assert sum(last_week) / len(last_week) <= 256
    assert sum(last_week) <= 1.02 * sum(first_week)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=400), st.data())
def test_a_crash_between_a_writes_entries_never_forgets_a_counted_record(
    records: int, data: st.DataObject
) -> None:
    """Any prefix of a write's entries (what a crash may leave) still knows every id of
    the write before it, and a counted record's total never appears without its id."""
    policy = Policy()
    memory = IdMemory()
    table: dict[bytes, bytes] = {}
    state = new_state(ICCID, NOW, policy)
    apply_subscription(state, subscription(subscription_msg(quota=100 * GB)), NOW, policy)
    for key, value in codec.sim_entries(codec.stored_of(state, policy)):
        table[key] = value or b""
    added: list[bytes] = []
    for n in range(records):
        stored = codec.load_sim(ICCID, table.get, policy)
        assert stored is not None
        memory = stored.hot.ids
        digest = id_hash(f"cdr-{n}")
        memory.add(digest, n, 0, 20_000)
        stored.hot.used += 1
        entries = codec.sim_entries(stored)
        cut = data.draw(st.integers(0, len(entries))) if n == records - 1 else len(entries)
        for key, value in entries[:cut]:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        if cut == len(entries):
            added.append(digest)
    after = codec.load_sim(ICCID, table.get, policy)
    assert after is not None
    assert all(d in after.hot.ids for d in added)
    assert after.hot.used == len(added)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=1500))
def test_a_memory_made_at_once_is_the_one_made_id_by_id(count: int) -> None:
    hashes = os.urandom(count * HASH_BYTES)
    one_by_one = IdMemory()
    for n in range(count):
        one_by_one.add(hashes[n * HASH_BYTES : (n + 1) * HASH_BYTES], 1000 + 15 * n, 0, 10**6)
    at_once = remembered(hashes, 1000, 15)
    assert at_once.parts() == one_by_one.parts()
    assert at_once.written == one_by_one.written
    assert at_once.middle_changed == one_by_one.middle_changed
