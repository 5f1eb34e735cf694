"""The offset ledger: what the worker may commit, whatever order its writes complete in."""

from __future__ import annotations

import itertools
import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

from stream_app.worker.offsets import Ledger, Partition, Plan

P = Partition("sim.usage", 3)


def begun(offset: int = 0) -> Ledger:
    ledger = Ledger()
    ledger.begin(P, offset, ledger.generation)
    return ledger


def fresh_offsets(runs: list[list[int]], plan: Plan) -> list[int]:
    return [offset for index, first in plan.fresh for offset in runs[index][first:]]


def test_messages_running_on_from_the_frontier_are_fresh_and_contiguous() -> None:
    ledger = begun(10)
    runs = [[10], [11], [12]]
    plan = ledger.plan(P, runs)
    assert plan is not None
    assert fresh_offsets(runs, plan) == [10, 11, 12]
    assert plan.contiguous and plan.upto == 13


def test_a_run_that_starts_past_the_frontier_is_not_contiguous() -> None:
    plan = begun(0).plan(P, [[1000, 1001]])
    assert plan is not None and not plan.contiguous and plan.upto == 1002


def test_a_hole_between_runs_is_not_contiguous() -> None:
    plan = begun(0).plan(P, [[0, 1], [3, 4]])
    assert plan is not None and not plan.contiguous


def test_a_hole_inside_a_run_never_held_a_record() -> None:
    # A compacted topic, or transaction markers: the log itself skips 2 and 5..6.
    runs = [[0, 1, 3, 4, 7]]
    plan = begun(0).plan(P, runs)
    assert plan is not None and plan.contiguous
    assert fresh_offsets(runs, plan) == [0, 1, 3, 4, 7] and plan.upto == 8


def test_a_run_read_from_below_the_cursor_vouches_for_the_offsets_up_to_it() -> None:
    ledger = begun(0)
    ledger.ticket(P, 5, ledger.generation)
    runs = [[2, 3, 9, 10]]  # 4 was taken; 5..8 are not in the log
    plan = ledger.plan(P, runs)
    assert plan is not None and plan.contiguous
    assert fresh_offsets(runs, plan) == [9, 10]


def test_offsets_already_taken_are_not_fresh_again() -> None:
    ledger = begun(0)
    ledger.ticket(P, 5, ledger.generation)
    runs = [[3, 4, 5, 6], [5, 6, 7]]  # delivered again after a seek
    plan = ledger.plan(P, runs)
    assert plan is not None
    assert fresh_offsets(runs, plan) == [5, 6, 7]
    assert plan.contiguous and plan.upto == 8


def test_nothing_fresh_leaves_the_cursor() -> None:
    ledger = begun(0)
    ledger.ticket(P, 5, ledger.generation)
    plan = ledger.plan(P, [[1, 2], [4]])
    assert plan is not None and plan.fresh == [] and plan.upto == 5


@example(log=[True, True, False, True], cuts=[2], drop=[], taken=0)  # a hole between chunks
@settings(max_examples=300, deadline=None)
@given(
    log=st.lists(st.booleans(), min_size=1, max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=6),
    drop=st.lists(st.integers(min_value=0, max_value=6), max_size=3),
    taken=st.integers(min_value=0, max_value=60),
)
def test_a_plan_is_contiguous_only_when_no_record_is_missing(
    log: list[bool], cuts: list[int], drop: list[int], taken: int
) -> None:
    """The log holds a record at offset i when log[i]; it is read in chunks (cut
    anywhere), some of which Faust may drop. A contiguous plan hands on exactly the
    log's records from the cursor on. With nothing dropped the plan is contiguous,
    unless a chunk begins past a hole in the log (a transaction marker, a compacted
    record): nothing in the chunks says the hole holds no record, so it is read back."""
    records = [offset for offset, held in enumerate(log) if held]
    bounds = sorted({0, len(records), *(c for c in cuts if c <= len(records))})
    runs = [records[a:b] for a, b in itertools.pairwise(bounds)]
    delivered = [run for index, run in enumerate(runs) if index not in drop and run]
    ledger = begun(0)
    cursor = min(taken, len(log))
    if cursor:
        ledger.ticket(P, cursor, ledger.generation)
    plan = ledger.plan(P, delivered)
    assert plan is not None
    handed = fresh_offsets(delivered, plan)
    expected = [offset for offset in records if cursor <= offset < plan.upto]
    if plan.contiguous:
        assert handed == expected
    seamless = all(later[0] == earlier[-1] + 1 for earlier, later in itertools.pairwise(delivered))
    if not drop and cursor == 0 and log[0] and seamless:
        assert plan.contiguous  # nothing was dropped, no hole between chunks: no read-back


def test_the_frontier_waits_for_the_earliest_ticket() -> None:
    ledger = begun(0)
    first = ledger.ticket(P, 5, ledger.generation)
    second = ledger.ticket(P, 9, ledger.generation)
    ledger.done(second, True)
    assert ledger.frontier(P) == 0
    assert ledger.committable({P: None}, [P]) == {P: 0}
    ledger.done(first, True)
    assert ledger.frontier(P) == 9
    assert ledger.committable({P: 5}, [P]) == {P: 9}


def test_a_failed_ticket_stops_the_frontier_until_the_next_rebalance() -> None:
    ledger = begun(0)
    failed = ledger.ticket(P, 5, ledger.generation)
    later = ledger.ticket(P, 9, ledger.generation)
    ledger.done(later, True)
    ledger.done(failed, False)
    assert ledger.frontier(P) == 0
    assert ledger.stuck() == [P]
    assert ledger.cursor(P) == 9  # later batches are not taken again meanwhile
    ledger.done(ledger.ticket(P, 12, ledger.generation), True)
    assert ledger.frontier(P) == 0
    ledger.reassigned()
    assert ledger.frontier(P) is None and ledger.stuck() == []


def test_a_rebalance_makes_earlier_tickets_inert_and_plans_unknown() -> None:
    ledger = begun(0)
    old = ledger.generation
    ticket = ledger.ticket(P, 5, old)
    ledger.reassigned()
    assert ledger.plan(P, [[0]]) is None
    ledger.begin(P, 3, old)  # begun with a start read before the rebalance: ignored
    assert ledger.frontier(P) is None
    ledger.begin(P, 3, ledger.generation)
    ledger.done(ticket, True)
    assert ledger.frontier(P) == 3
    ledger.ticket(P, 8, old)
    assert ledger.cursor(P) == 3


def test_only_assigned_partitions_ahead_of_their_commit_are_committable() -> None:
    ledger = begun(0)
    other = Partition("sim.usage", 4)
    ledger.begin(other, 7, ledger.generation)
    ledger.done(ledger.ticket(P, 5, ledger.generation), True)
    assert ledger.committable({P: 5, other: 7}, [P, other]) == {}
    assert ledger.committable({P: 2, other: None}, [P]) == {P: 5}


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=12),
    outcomes=st.lists(st.booleans(), min_size=12, max_size=12),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_the_frontier_is_the_end_of_the_longest_prefix_of_batches_done(
    sizes: list[int], outcomes: list[bool], seed: int
) -> None:
    """Whatever order acknowledgements arrive in, never a committed offset past one not done."""
    ledger = begun(100)
    tickets = []
    upto = 100
    for size in sizes:
        upto += size
        tickets.append(ledger.ticket(P, upto, ledger.generation))
    order = list(range(len(tickets)))
    random.Random(seed).shuffle(order)
    completed: set[int] = set()
    for index in order:
        ledger.done(tickets[index], outcomes[index])
        completed.add(index)
        expected = 100
        for i, ticket in enumerate(tickets):
            if i not in completed or not outcomes[i]:
                break
            expected = ticket.upto
        assert ledger.frontier(P) == expected
