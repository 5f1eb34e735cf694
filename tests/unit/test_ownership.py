"""The per-partition books: due index and status counts kept current by every write."""

from __future__ import annotations

from stream_app import codec
from stream_app.domain import Policy, apply_subscription, apply_usage, new_state, subscription, usage_record
from stream_app.domain.fast import hot_of
from stream_app.worker.ownership import Books, summary

from .scenario import GB, ICCID, OTHER, subscription_msg, t, usage_msg


def test_books_count_statuses_and_reasons_and_follow_every_write() -> None:
    policy = Policy()
    now = t("2026-03-20T12:00:00+08:00")
    sims = []
    for iccid in (ICCID, OTHER):
        state = new_state(iccid, now, policy)
        apply_subscription(state, subscription(subscription_msg(iccid=iccid, quota=GB)), now, policy)
        sims.append(state)
    books = Books()
    book = books.build(
        3,
        [
            codec.read_card(s.iccid, codec.sim_entries(codec.stored_of(s, policy))[-1][1] or b"", policy)
            for s in sims
        ],
    )
    assert (book.statuses["active"], len(book.due)) == (2, 2)

    state = sims[0]
    before = summary(hot_of(state, policy))
    apply_usage(state, usage_record(usage_msg("2026-03-20T11:00:00+08:00", 2 * GB, iccid=ICCID)), now, policy)
    books.record(3, before, codec.stored_of(state, policy))
    statuses, reasons, _pending = books.totals()
    assert (statuses["active"], statuses["suspended"], reasons["quota"]) == (1, 1, 1)
    assert book.due.next_due() == t("2026-04-01T00:00:00+08:00").timestamp()

    generation = books.generation
    books.clear()
    assert books.partitions == {} and books.generation == generation + 1
    books.record(3, None, codec.stored_of(state, policy))  # a partition not built yet learns it when built
    assert books.partitions == {}


def test_books_keep_each_pools_roster_state_and_month_start() -> None:
    from stream_app.domain.inputs import pool
    from stream_app.domain.pools import USAGE, Report, apply_pool, apply_report, new_pool

    policy = Policy()
    now = t("2026-03-20T12:00:00+08:00")
    books = Books(policy)
    books.build(5, [])
    state = new_pool("fleet-1", now, policy)
    state.roster = books.roster(5, "fleet-1") or set()
    apply_report(state, Report("fleet-1", ICCID, USAGE, "2026-03", GB, "r1"), now, policy)
    books.record(5, None, codec.PoolStored(state))
    book = books.partitions[5]
    assert book.rosters["fleet-1"] == {ICCID} and book.pools["fleet-1"] == "unknown"
    definition = pool(
        {"pool_id": "fleet-1", "quota_bytes": GB, "auto_suspend": True, "updated_at": "2026-03-20T00:00:00Z"}
    )
    apply_pool(state, definition, now, policy)
    books.record(5, None, codec.PoolStored(state))
    assert book.pools["fleet-1"] == "exhausted"
    assert list(book.due.pop_due(t("2026-04-01T00:00:00+08:00").timestamp())) == [
        (t("2026-04-01T00:00:00+08:00").timestamp(), "pool:fleet-1")
    ]
