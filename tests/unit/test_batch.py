"""A batch decides exactly what the same messages decide one by one."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app import codec
from stream_app.domain import Policy, SimState, apply_subscription, new_state, subscription
from stream_app.domain.state import canonical
from stream_app.domain.timeutil import format_time
from stream_app.pipeline import Source, decide
from stream_app.worker.batch import Incoming, decide_batch

from .scenario import GB, ICCID, OTHER, subscription_msg, t

NOW = t("2026-03-20T12:00:00+08:00")

usage_batches = st.lists(
    st.tuples(
        st.sampled_from([ICCID, OTHER, "898600000000000000XX"]),
        st.integers(min_value=0, max_value=40),  # record id: repeats are duplicates
        st.integers(min_value=0, max_value=GB // 8),
        st.integers(min_value=0, max_value=9 * 24 * 60),  # minutes before now: some too old
        st.booleans(),  # garbage instead
    ),
    max_size=60,
)


def _usage(iccid: str, n: int, total: int, minutes: int, garbage: bool) -> bytes:
    if garbage:
        return b"{not json"
    start = NOW - timedelta(minutes=minutes)
    return orjson.dumps(
        {
            "record_id": f"r{n}",
            "iccid": iccid,
            "carrier": "cmcc",
            "start": format_time(start),
            "end": format_time(start + timedelta(minutes=1)),
            "bytes_up": total,
            "bytes_down": 0,
        }
    )


def _known_sims(policy: Policy) -> dict[str, SimState]:
    states = {}
    for iccid in (ICCID, OTHER):
        state = new_state(iccid, NOW, policy)
        apply_subscription(state, subscription(subscription_msg(iccid=iccid, quota=2 * GB)), NOW, policy)
        states[iccid] = state
    return states


def _table(states: dict[str, SimState], policy: Policy) -> dict[bytes, bytes]:
    table: dict[bytes, bytes] = {}
    for state in states.values():
        _store(table, codec.sim_entries(codec.stored_of(state, policy)))
    return table


def _store(table: dict[bytes, bytes], entries: list[codec.Entry]) -> None:
    for key, value in entries:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value


@settings(max_examples=200, deadline=None)
@given(usage_batches, st.booleans(), st.integers(min_value=1, max_value=3))
def test_a_batch_decides_what_the_messages_decide_one_by_one(
    batch: list[tuple[str, int, int, int, bool]], known: bool, batches: int
) -> None:
    """Through the table as the worker keeps it: the fast lane, the codec, the batches."""
    policy = Policy()
    one: dict[str, SimState] = _known_sims(policy) if known else {}
    table = _table(_known_sims(policy), policy) if known else {}
    expected: dict[str, list[dict[str, Any]]] = defaultdict(list)
    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    incoming = []
    for offset, (iccid, n, total, minutes, garbage) in enumerate(batch):
        raw, source = _usage(iccid, n, total, minutes, garbage), Source("sim.usage", 0, offset)
        decision = decide("usage", raw, source, one.get, NOW, policy, 65536, key=iccid.encode())
        if decision.state is not None and decision.iccid is not None:
            one[decision.iccid] = decision.state
        for output in decision.outputs:
            expected[output.key].append(output.value)
        incoming.append(Incoming(source, raw, iccid.encode(), None, None))

    size = max(1, len(incoming) // batches)
    for first in range(0, len(incoming), size):
        invalid, sims = decide_batch(
            "usage",
            incoming[first : first + size],
            lambda iccid: codec.load_sim(iccid, table.get, policy),
            NOW,
            policy,
            65536,
        )
        for _incoming, decision in invalid:
            got[""].extend(output.value for output in decision.outputs)
        for sim in sims:
            if sim.state is not None:
                _store(table, codec.sim_entries(sim.state))
            for _incoming, decision in sim.decisions:
                for output in decision.outputs:
                    got[output.key].append(output.value)
    # per SIM the outputs come in the same order; dead letters of unparsable input have no SIM
    assert {k: v for k, v in got.items() if k} == {k: v for k, v in expected.items() if k}
    assert sorted(map(orjson.dumps, got[""])) == sorted(map(orjson.dumps, expected[""]))
    stored = codec.states_of(table, policy)
    assert {k: canonical(v) for k, v in stored.items()} == {k: canonical(v) for k, v in one.items()}


def test_a_sim_whose_state_cannot_be_loaded_dead_letters_its_messages_and_the_rest_go_on() -> None:
    policy = Policy()

    def load(iccid: str) -> codec.Stored | None:
        if iccid == OTHER:
            raise ValueError("corrupt stored state")
        return None

    incoming = [
        Incoming(Source("sim.usage", 0, n), _usage(iccid, n, 10, 5, False), iccid.encode(), None, None)
        for n, iccid in enumerate([ICCID, OTHER, ICCID])
    ]
    invalid, sims = decide_batch("usage", incoming, load, NOW, policy, 65536)
    assert [(i.source.offset, d.outputs[0].value["error"]) for i, d in invalid] == [(1, "internal_error")]
    assert [s.iccid for s in sims] == [ICCID]
    assert sims[0].state is not None and sims[0].state.state().months["2026-03"].used_bytes == 20
