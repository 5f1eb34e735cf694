"""The offset ledger: what the worker may commit, whatever order its writes complete in."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.worker.offsets import Ledger, Partition

P = Partition("sim.usage", 3)


def begun(offset: int = 0) -> Ledger:
    ledger = Ledger()
    ledger.begin(P, offset, ledger.generation)
    return ledger


def test_a_batch_running_on_from_the_frontier_is_fresh_and_contiguous() -> None:
    ledger = begun(10)
    plan = ledger.plan(P, [12, 10, 11, 11])
    assert plan is not None
    assert plan.fresh == [10, 11, 12]
    assert plan.contiguous


def test_a_batch_that_starts_past_the_frontier_is_not_contiguous() -> None:
    plan = begun(0).plan(P, [1000, 1001])
    assert plan is not None and not plan.contiguous


def test_a_hole_inside_a_batch_is_not_contiguous() -> None:
    plan = begun(0).plan(P, [0, 1, 3])
    assert plan is not None and not plan.contiguous


def test_offsets_already_taken_are_not_fresh_again() -> None:
    ledger = begun(0)
    ledger.ticket(P, 5, ledger.generation)
    plan = ledger.plan(P, [3, 4, 5, 6])
    assert plan is not None
    assert plan.fresh == [5, 6]
    assert plan.contiguous


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
    assert ledger.plan(P, [0]) is None
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
