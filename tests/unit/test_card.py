"""A SIM's card: what the worker indexes it by (status, reasons, throttled, pending, pool)
survives being read back and rewritten on the fast lane, and only pooled cards grow."""

from __future__ import annotations

import bisect
from datetime import timedelta
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from stream_app import codec
from stream_app.domain import Policy, SimState, apply_subscription, apply_usage, new_state, subscription
from stream_app.domain import usage_record as record
from stream_app.domain.memory import HASH_BYTES

from .scenario import GB, ICCID, subscription_msg, t, usage_msg

NOW = t("2026-03-20T12:00:00+08:00")


def _sim(policy: Policy, **plan: Any) -> SimState:
    state = new_state(ICCID, NOW, policy)
    apply_subscription(state, subscription(subscription_msg(quota=GB, **plan)), NOW, policy)
    return state


def _table(state: SimState, policy: Policy) -> dict[bytes, bytes]:
    return {k: v for k, v in codec.sim_entries(codec.stored_of(state, policy)) if v is not None}


def _rewritten_on_the_fast_lane(table: dict[bytes, bytes], policy: Policy) -> dict[bytes, bytes]:
    """What a record on the fast lane writes: the card as loaded, the profile unchanged."""
    stored = codec.load_sim(ICCID, table.get, policy)
    assert stored is not None
    return {**table, **{k: v for k, v in codec.sim_entries(stored) if v is not None}}


def test_a_pooled_sims_card_carries_its_pool_and_other_cards_do_not_grow() -> None:
    policy = Policy()
    plain, pooled = _sim(policy), _sim(policy, pool_id="fleet-1")
    plain_card = _table(plain, policy)[ICCID.encode()]
    pooled_card = _table(pooled, policy)[ICCID.encode()]
    profile = codec.encode_profile(plain)
    recent = len(plain.ids.recent)
    assert recent % HASH_BYTES == 0
    assert len(plain_card) == codec._CARD.size + recent + len(profile)  # as before pools were indexed
    assert len(pooled_card) - len(codec.encode_profile(pooled)) == len(plain_card) - len(profile) + 1 + 7

    for table in (_table(pooled, policy), _rewritten_on_the_fast_lane(_table(pooled, policy), policy)):
        card = codec.read_card(ICCID, table[ICCID.encode()], policy)
        assert card.pool_id == "fleet-1"
        stored = codec.load_sim(ICCID, table.get, policy)
        assert stored is not None and stored.hot.pool_id == "fleet-1"
        whole = stored.state()  # the profile after the pool id is read whole
        assert whole.subscription is not None and whole.subscription.pool_id == "fleet-1"
    assert codec.read_card(ICCID, plain_card, policy).pool_id is None


def test_throttled_and_pending_survive_a_record_on_the_fast_lane() -> None:
    policy = Policy(ack_timeout=timedelta(minutes=10))
    state = _sim(policy, on_quota="throttle", throttle_kbps=128)
    apply_usage(state, record(usage_msg("2026-03-20T11:00:00+08:00", 2 * GB)), NOW, policy)
    assert state.throttled and set(state.pending) == {"throttling"}
    table = _table(state, policy)
    stored = codec.load_sim(ICCID, table.get, policy)
    assert stored is not None and stored.hot.lane is not None  # its next records take the fast lane
    assert (stored.hot.throttled, stored.hot.pending) == (True, frozenset({"throttling"}))
    card = codec.read_card(ICCID, _rewritten_on_the_fast_lane(table, policy)[ICCID.encode()], policy)
    assert (card.status, card.throttled, card.pending) == ("active", True, frozenset({"throttling"}))


_SUFFIXES = [b"", b"/p", b"/m", b"/s0", b"/s12", b"/s9"]


@given(
    shorter=st.sets(st.text(alphabet="0123", min_size=19, max_size=19), min_size=1, max_size=8),
    longer=st.sets(st.sampled_from("0123456789"), max_size=4),
    pools=st.sets(st.text(alphabet="abc-_.0123456789", min_size=1, max_size=6), max_size=3),
)
@example(shorter={"8986000000000000001"}, longer={"0"}, pools=set())
def test_a_scan_that_seeks_past_each_sim_meets_every_card_and_every_pool_key(
    shorter: set[str], longer: set[str], pools: set[str]
) -> None:
    """ICCIDs of 19 and 20 digits may be prefixes of each other (``…1`` and ``…10``):
    seeking from a card to ``past_sim`` must still meet the next SIM's card."""
    iccids = shorter | {iccid + digit for iccid in shorter for digit in longer}
    keys = sorted(
        {iccid.encode() + suffix for iccid in iccids for suffix in _SUFFIXES}
        | {codec.pool_key(pool) for pool in pools}
        | {codec.member_key(pool, iccid) for pool in pools for iccid in iccids}
    )
    met: list[bytes] = []
    at = 0
    while at < len(keys):  # what a RocksDB iterator does: next, or seek to the first key >= target
        key = keys[at]
        met.append(key)
        onward = codec.past_sim(key)
        at = at + 1 if onward is None else bisect.bisect_left(keys, onward)
    wanted = [key for key in keys if codec.is_card_key(key) or key.startswith(codec.POOL)]
    assert [key for key in met if codec.is_card_key(key) or key.startswith(codec.POOL)] == wanted
    assert len(met) < len(keys)  # the SIMs' other entries were skipped
