"""The worker's side of pools that needs no broker: how a batch is cut into writes of a
pool, and the rosters rebuilt from a scan of the table."""

from __future__ import annotations

import orjson

from stream_app import codec
from stream_app.domain import Policy
from stream_app.domain.pools import JOIN, USAGE, Report, apply_report, new_pool
from stream_app.pipeline import Source
from stream_app.worker.batch import Incoming
from stream_app.worker.pooling import PoolScan, split_by_pool

from .scenario import GB, t

NOW = t("2026-03-20T12:00:00+08:00")


def _incoming(offset: int, key: bytes) -> Incoming:
    return Incoming(Source("sim.pool-usage", 0, offset), b"{}", key, None, None)


def test_a_batch_is_cut_in_order_so_that_no_write_holds_more_than_the_limit_of_one_pool() -> None:
    keys = [b"big"] * 2500 + [b"small"] * 10
    keys[::7] = [b"other"] * len(keys[::7])
    batch = [_incoming(n, key) for n, key in enumerate(keys)]
    parts = split_by_pool(batch, limit=1000)
    assert [i for part in parts for i in part] == batch  # every message, once, in order
    for part in parts:
        for key in (b"big", b"small", b"other"):
            assert sum(1 for i in part if i.key == key) <= 1000
    assert len(parts) == 3
    assert split_by_pool([], limit=10) == []


def test_the_roster_is_rebuilt_from_member_rows_and_the_rows_a_pools_value_still_carries() -> None:
    policy = Policy()
    state = new_pool("fleet-1", NOW, policy)
    iccids = [f"8986000000000000000{n}" for n in range(4)]
    for iccid in iccids[:3]:
        apply_report(state, Report("fleet-1", iccid, JOIN, "2026-03", 0, "s"), NOW, policy)
    table = dict(codec.pool_entries(codec.PoolStored(state, 2)))
    # The last write: a fourth member joined and the first left, but a crash came after
    # the pool's value and before their rows.
    apply_report(state, Report("fleet-1", iccids[3], USAGE, "2026-03", GB, "r"), NOW, policy)
    apply_report(state, Report("fleet-1", iccids[0], "leave", "2026-03", 0, "s2"), NOW, policy)
    key, value = codec.pool_entries(codec.PoolStored(state, 2))[0]
    table[key] = value
    scan = PoolScan()
    for key, raw in table.items():
        assert raw is not None
        scan.add(key, raw)
    (found,) = scan.pools()
    assert found.partition == 2 and found.state.pool_id == "fleet-1"
    assert found.state.roster == set(iccids[1:])
    assert orjson.loads(table[codec.member_key("fleet-1", iccids[0])] or b"{}")["in"] is True  # the stale row
