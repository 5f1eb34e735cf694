"""A pool as stored: its value, its member rows, and what a crash between them leaves.

The worker writes a pool's value (its totals, with the rows the step changed) before
the rows themselves, all to one changelog partition; the changelog is what a
replacement worker recovers. These tests write through ``codec.pool_entries`` into a
dict standing for the table, stop the writes where a crash could, load the pool back
with ``codec.load_pool`` as the next batch would, and check that the totals and the
rows they were summed from never part.
"""

from __future__ import annotations

from stream_app import codec
from stream_app.codec import Entry
from stream_app.domain import Policy
from stream_app.domain.inputs import pool
from stream_app.domain.pools import USAGE, PoolState, Report, apply_pool, apply_report, new_pool

from .scenario import GB, t

FLEET = "fleet-1"
NOW = t("2026-03-20T12:00:00+08:00")
POLICY = Policy()
A, B, C = (f"8986000000000000000{n}" for n in (1, 2, 3))


def _write(table: dict[bytes, bytes], entries: list[Entry], upto: int | None = None) -> None:
    """Apply entries as the changelog would hold them; ``upto``: a crash after that many."""
    for key, value in entries[:upto]:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value


def _load(table: dict[bytes, bytes], *iccids: str) -> PoolState:
    state = codec.load_pool(FLEET, table.get, iccids, None)
    assert state is not None
    return state


def _report(state: PoolState, iccid: str, used: int, cause: str) -> None:
    apply_report(state, Report(FLEET, iccid, USAGE, "2026-03", used, cause), NOW, POLICY)


def _stored_rows(table: dict[bytes, bytes]) -> dict[str, int]:
    """What a replacement worker would take each member to have counted: its row, or the
    pending row in the pool's value, which overrides it."""
    rows: dict[str, int] = {}
    pending: dict[str, dict[str, int]] = {}
    for key, raw in table.items():
        pool_id, iccid, value = codec.read_pool_index(key, raw)
        assert pool_id == FLEET
        if iccid is None:
            pending = {k: v["m"] for k, v in value.get("rows", {}).items()}
        else:
            rows[iccid] = value["m"].get("2026-03", 0)
    rows.update({k: m.get("2026-03", 0) for k, m in pending.items()})
    return rows


def _defined() -> dict[bytes, bytes]:
    state = new_pool(FLEET, NOW, POLICY)
    definition = {
        "pool_id": FLEET,
        "quota_bytes": 100 * GB,
        "auto_suspend": True,
        "updated_at": "2026-03-01T00:00:00Z",
    }
    apply_pool(state, pool(definition), NOW, POLICY)
    table: dict[bytes, bytes] = {}
    _write(table, codec.pool_entries(codec.PoolStored(state)))
    return table


def test_rows_not_written_before_a_crash_are_carried_by_the_next_write_of_the_pool() -> None:
    table = _defined()
    state = _load(table, A, B)
    _report(state, A, GB, "r1")
    _report(state, B, 2 * GB, "r2")
    _write(table, codec.pool_entries(codec.PoolStored(state)), upto=1)  # the value only, then a crash
    assert codec.member_key(FLEET, A) not in table

    # The batch is processed again, in other boundaries: first another member's report.
    state = _load(table, C)
    _report(state, C, 3 * GB, "r3")
    _write(table, codec.pool_entries(codec.PoolStored(state)))
    assert _stored_rows(table) == {A: GB, B: 2 * GB, C: 3 * GB}

    # A's report again (its cumulative figure): nothing is counted twice.
    state = _load(table, A, B)
    _report(state, A, GB, "r1")
    _report(state, B, 2 * GB, "r2")
    assert state.usage("2026-03").used == 6 * GB
    _write(table, codec.pool_entries(codec.PoolStored(state)))
    assert _stored_rows(table) == {A: GB, B: 2 * GB, C: 3 * GB}


def test_a_write_that_changes_no_row_keeps_the_rows_a_crash_left_unwritten() -> None:
    # e.g. the pool's month start (a tick) or its definition, right after the crash
    table = _defined()
    state = _load(table, A)
    _report(state, A, GB, "r1")
    _write(table, codec.pool_entries(codec.PoolStored(state)), upto=1)
    state = _load(table)
    _write(table, codec.pool_entries(codec.PoolStored(state)))
    assert _stored_rows(table) == {A: GB}
    assert _load(table, A).members[A].months == {"2026-03": GB}


def test_rows_written_are_not_carried_again() -> None:
    table = _defined()
    state = _load(table, A, B)
    _report(state, A, GB, "r1")
    _report(state, B, GB, "r2")
    _write(table, codec.pool_entries(codec.PoolStored(state)))
    state = _load(table, C)
    _report(state, C, GB, "r3")
    value = codec.pool_entries(codec.PoolStored(state))[0][1]
    assert value is not None and set(codec.read_pool_index(codec.pool_key(FLEET), value)[2]["rows"]) == {C}
