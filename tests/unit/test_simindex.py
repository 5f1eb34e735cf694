"""The index behind GET /sims: kept by every write, filtered and paged in ICCID order,
pages of partitions and workers merged into one."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app import codec
from stream_app.domain import (
    Policy,
    SimState,
    apply_balance,
    apply_subscription,
    apply_usage,
    new_state,
    subscription,
    usage_record,
)
from stream_app.domain.fast import hot_of
from stream_app.domain.inputs import balance_event
from stream_app.simindex import SimIndex, Want, keys_of, merge
from stream_app.worker.ownership import Books, summary

from .scenario import GB, subscription_msg, t, usage_msg

NOW = t("2026-03-20T12:00:00+08:00")
SUSPENDED = frozenset({"status:suspended"})
QUOTA = frozenset({"reason:quota"})


def iccid(n: int) -> str:
    return f"8986{n:016d}"


def _sim(n: int, policy: Policy, **plan: Any) -> SimState:
    state = new_state(iccid(n), NOW, policy)
    apply_subscription(state, subscription(subscription_msg(iccid=iccid(n), quota=GB, **plan)), NOW, policy)
    return state


def _card(state: SimState, policy: Policy) -> codec.Card:
    card = codec.sim_entries(codec.stored_of(state, policy))[-1][1]
    assert card is not None
    return codec.read_card(state.iccid, card, policy)


def _walk(index: SimIndex, want: Want, limit: int = 2, budget: int = 20_000) -> list[str]:
    """Every page from the start, following the frontier."""
    seen: list[str] = []
    after: str | None = ""
    while after is not None:
        found, after = index.page(want, after, limit, budget)
        seen += found
    return seen


def test_every_write_moves_a_sim_between_the_lists_it_is_found_in() -> None:
    policy = Policy()
    sims = [_sim(n, policy, pool_id="fleet-1" if n % 2 else None) for n in range(6)]
    books = Books(policy)
    books.build(0, [_card(s, policy) for s in reversed(sims)])  # the table's order is not the ICCIDs'
    index = books.partitions[0].index
    assert _walk(index, Want()) == [iccid(n) for n in range(6)]
    assert _walk(index, Want((frozenset({"pool:fleet-1"}),))) == [iccid(1), iccid(3), iccid(5)]
    assert _walk(index, Want((SUSPENDED,))) == []

    def write(state: SimState, change: Any) -> None:
        before = summary(hot_of(state, policy))
        change(state)
        books.record(0, before, codec.stored_of(state, policy))

    over_quota = usage_record(usage_msg("2026-03-20T11:00:00+08:00", 2 * GB, iccid=iccid(3)))
    write(sims[3], lambda s: apply_usage(s, over_quota, NOW, policy))
    in_arrears = balance_event(
        {
            "event_id": "b1",
            "iccid": iccid(4),
            "at": "2026-03-20T11:00:00+08:00",
            "balance": -1,
            "currency": "CNY",
        }
    )
    write(sims[4], lambda s: apply_balance(s, in_arrears, NOW, policy))
    leaving = subscription(subscription_msg(iccid=iccid(5), quota=GB, updated_at="2026-03-10T00:00:00+08:00"))
    write(sims[5], lambda s: apply_subscription(s, leaving, NOW, policy))  # leaves its pool
    newcomer = _sim(9, policy, pool_id="fleet-2")
    books.record(0, None, codec.stored_of(newcomer, policy))

    assert _walk(index, Want((SUSPENDED,))) == [iccid(3), iccid(4)]
    assert _walk(index, Want((SUSPENDED, QUOTA))) == [iccid(3)]
    assert _walk(index, Want((frozenset({"reason:quota", "reason:arrears"}),))) == [iccid(3), iccid(4)]
    assert _walk(index, Want((frozenset({"pool:fleet-1"}),))) == [iccid(1), iccid(3)]
    assert _walk(index, Want((frozenset({"pool:fleet-2"}),))) == [iccid(9)]
    assert _walk(index, Want((frozenset({"status:active"}),), frozenset({"pool:fleet-1"}))) == [
        iccid(0),
        iccid(2),
        iccid(5),
        iccid(9),
    ]
    assert _walk(index, Want(), limit=4) == [iccid(n) for n in (0, 1, 2, 3, 4, 5, 9)]
    statuses, reasons, _pending = books.totals()  # the counts agree with the lists
    assert (statuses["suspended"], reasons["quota"], reasons["arrears"]) == (2, 1, 1)


def test_a_write_that_changes_no_key_leaves_the_lists_alone() -> None:
    policy = Policy()
    state = _sim(1, policy)
    books = Books(policy)
    books.build(0, [_card(state, policy)])
    index = books.partitions[0].index
    lists_before = {key: list(listed) for key, listed in index._lists.items()}
    before = summary(hot_of(state, policy))
    apply_usage(
        state, usage_record(usage_msg("2026-03-20T11:00:00+08:00", GB // 10, iccid=iccid(1))), NOW, policy
    )
    books.record(0, before, codec.stored_of(state, policy))
    assert {key: list(listed) for key, listed in index._lists.items()} == lists_before


KEYS = st.sampled_from(["status:active", "status:suspended"]).flatmap(
    lambda status: st.frozensets(
        st.sampled_from(["reason:quota", "reason:arrears", "pool:a", "pool:b", "throttled"]), max_size=3
    ).map(lambda extra: frozenset({status}) | extra)
)
WANTS = st.builds(
    Want,
    st.lists(
        st.frozensets(
            st.sampled_from(["status:active", "status:suspended", "reason:quota", "pool:a", "throttled"]),
            min_size=1,
            max_size=2,
        ),
        max_size=2,
    ).map(tuple),
    st.frozensets(st.sampled_from(["throttled", "pool:b"]), max_size=1),
)


@settings(max_examples=150, deadline=None)
@given(
    fleet=st.dictionaries(st.integers(0, 400).map(iccid), KEYS, max_size=60),
    moves=st.lists(st.tuples(st.integers(0, 400).map(iccid), KEYS), max_size=20),
    want=WANTS,
    partitions=st.integers(1, 4),
    limit=st.integers(1, 7),
    budget=st.integers(1, 9),
)
def test_pages_merged_over_partitions_walk_exactly_the_matching_sims_in_order(
    fleet: dict[str, frozenset[str]],
    moves: list[tuple[str, frozenset[str]]],
    want: Want,
    partitions: int,
    limit: int,
    budget: int,
) -> None:
    indexes = [SimIndex() for _ in range(partitions)]

    def where(sim: str) -> SimIndex:
        return indexes[int(sim) % partitions]

    for sim, keys in fleet.items():
        where(sim).add(sim, keys)
    truth = dict(fleet)
    for sim, keys in moves:  # changes and newcomers after the build
        where(sim).move(sim, truth.get(sim, frozenset()), keys)
        truth[sim] = keys
    expected = sorted(sim for sim, keys in truth.items() if want.matches(keys))

    seen: list[str] = []
    after: str | None = ""
    while after is not None:
        pages = [index.page(want, after, limit, budget) for index in indexes]
        found, following = merge(pages, limit, str)
        assert len(found) <= limit and found == sorted(found)
        assert following is None or following > after
        seen += found
        after = following
    assert seen == expected


def test_a_merge_shows_nothing_beyond_what_every_source_has_answered_for() -> None:
    def sims(*numbers: int) -> list[dict[str, Any]]:
        return [{"iccid": iccid(n)} for n in numbers]

    def key(item: dict[str, Any]) -> str:
        return str(item["iccid"])

    # the second worker stopped looking at 5 (its budget): 7 and 8 wait for the next page
    page, following = merge([(sims(1, 7, 8), None), (sims(2), iccid(5))], 10, key)
    assert ([key(s) for s in page], following) == ([iccid(1), iccid(2)], iccid(5))
    # a full page ends at its last SIM; a SIM answered twice (a rebalance) is shown once
    page, following = merge([(sims(1, 3), None), (sims(2, 3, 4), None)], 3, key)
    assert ([key(s) for s in page], following) == ([iccid(1), iccid(2), iccid(3)], iccid(3))
    # everything answered and shown: the end
    assert merge([(sims(1), None), ([], None)], 3, key) == (sims(1), None)


def test_keys_name_status_reasons_flags_and_pool() -> None:
    assert keys_of("suspended", {"quota", "pool"}, True, {"suspension"}, "fleet-1") == {
        "status:suspended",
        "reason:quota",
        "reason:pool",
        "throttled",
        "pending:suspension",
        "pool:fleet-1",
    }
    assert keys_of("active", (), False, (), None) == {"status:active"}
