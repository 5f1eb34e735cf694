"""The feed generator: deterministic, valid where it should be, bad where it should be."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from stream_app.domain import InvalidInput, subscription, usage_record
from stream_app.pipeline import parse
from stream_app.tools.feed import (
    FeedCounts,
    FeedOptions,
    Message,
    UsageGenerator,
    fleet,
    iccid_for,
    pool_messages,
    records_to_quota,
    subscription_message,
)

START = datetime(2026, 3, 31, 15, 58, 20, 250_000, tzinfo=UTC)
MAX = 65536


def generate(options: FeedOptions, count: int, step: timedelta = timedelta(seconds=0.5)) -> list[Message]:
    """``count`` usage messages in batches of 50, the clock moving ``step`` per batch."""
    generator = UsageGenerator(options, fleet(options), START)
    messages: list[Message] = []
    now = START
    while len(messages) < count:
        now += step
        messages += generator.batch(min(50, count - len(messages)), now)
    return messages


def luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char) * (2 if position % 2 else 1)
        total += digit - 9 if digit > 9 else digit
    return total % 10 == 0


def test_the_fleet_has_valid_distinct_iccids_and_is_the_same_for_a_seed() -> None:
    sims = fleet(FeedOptions(sims=500, seed=7))
    iccids = [s.iccid for s in sims]
    assert len(set(iccids)) == 500
    for iccid in iccids:
        assert len(iccid) == 20 and iccid.isdigit() and iccid.startswith("8986")
        assert luhn_ok(iccid)
    assert sims == fleet(FeedOptions(sims=500, seed=7, rate=5, duplicate_share=0.5))
    assert iccids != [s.iccid for s in fleet(FeedOptions(sims=500, seed=8))]
    assert all(iccid == iccid_for(7, i, iccid[4:6]) for i, iccid in enumerate(iccids))
    assert {iccid[4:6] for iccid in iccids} == {"00", "01", "03"}  # the three carriers' issuer codes


def test_the_shares_of_the_fleet_are_roughly_respected() -> None:
    sims = fleet(FeedOptions(sims=4000, auto_suspend_share=0.3))
    assert 0.27 < sum(s.auto_suspend for s in sims) / 4000 < 0.33
    assert 0.17 < sum(s.heavy for s in sims) / 4000 < 0.23
    expiring = [s.expires_after for s in sims if s.expires_after is not None]
    assert 40 < len(expiring) < 130  # a few, 1-3 minutes after the start
    assert all(timedelta(minutes=1) <= e <= timedelta(minutes=3) for e in expiring)
    assert not any(s.auto_suspend for s in fleet(FeedOptions(sims=200, auto_suspend_share=0)))
    assert all(s.auto_suspend for s in fleet(FeedOptions(sims=200, auto_suspend_share=1)))


def test_every_subscription_is_valid_and_newer_on_a_later_run() -> None:
    for sim in fleet(FeedOptions(sims=300)):
        message = subscription_message(sim, START)
        assert (message.topic, message.key, message.kind) == (
            "subscriptions",
            sim.iccid.encode(),
            "subscription",
        )
        value = orjson.loads(message.value)
        sub = subscription(value)
        assert parse("subscriptions", message.value, MAX, message.key) == sub
        assert "timezone" not in value  # the worker's default billing zone
        assert (sub.iccid, sub.quota_bytes, sub.auto_suspend, sub.pool_id) == (
            sim.iccid,
            sim.quota_bytes if sim.pool_id is None else None,  # a pool member: no cap of its own
            sim.auto_suspend,
            sim.pool_id,
        )
        assert sub.updated_at == START.replace(microsecond=0) and sub.valid_from < START
        if sim.expires_after is None:
            assert sub.expires_at is None
        else:
            assert sub.expires_at is not None and START < sub.expires_at <= START + timedelta(minutes=3)
        later = subscription(orjson.loads(subscription_message(sim, START + timedelta(seconds=1)).value))
        assert later.updated_at > sub.updated_at


def test_the_messages_are_the_same_for_a_seed_and_differ_for_another() -> None:
    options = FeedOptions(sims=100, seed=3)
    assert generate(options, 1000) == generate(options, 1000)
    assert generate(options, 1000) != generate(FeedOptions(sims=100, seed=4), 1000)


def test_the_shares_of_duplicates_and_bad_records_are_roughly_respected() -> None:
    kinds = Counter(m.kind for m in generate(FeedOptions(duplicate_share=0.1, bad_share=0.05), 10_000))
    assert kinds.total() == 10_000
    assert 850 < kinds["duplicate"] < 1150
    assert 400 < kinds["bad"] < 600
    none = Counter(m.kind for m in generate(FeedOptions(duplicate_share=0, bad_share=0), 2000))
    assert none == {"record": 2000}


def test_good_records_pass_the_validators_and_never_end_after_now() -> None:
    options = FeedOptions(sims=200, duplicate_share=0.05, bad_share=0.05)
    generator = UsageGenerator(options, fleet(options), START)
    iccids = {s.iccid for s in generator.sims}
    ids: set[str] = set()
    now = START
    for _ in range(100):
        now += timedelta(seconds=3)
        for message in generator.batch(40, now):
            if message.kind == "bad":
                continue
            record = usage_record(orjson.loads(message.value))
            assert parse("usage", message.value, MAX, message.key) == record
            assert message.topic == "usage" and message.key == record.iccid.encode()
            assert record.iccid in iccids
            assert record.end <= now
            assert timedelta(minutes=1) <= record.end - record.start <= timedelta(minutes=5)
            assert record.bytes_up > 0 and record.bytes_down > 0
            if message.kind == "record":  # fresh: ends at most 30 s (+ the truncated fraction) before now
                assert now - record.end <= timedelta(seconds=31)
                assert record.record_id not in ids
                ids.add(record.record_id)
    assert len(ids) > 3000


def test_bad_records_are_rejected_by_the_pipeline_for_each_flaw() -> None:
    bad = [m for m in generate(FeedOptions(sims=50, bad_share=0.3), 3000) if m.kind == "bad"]
    errors: Counter[str] = Counter()
    for message in bad:
        assert message.topic == "usage"
        with pytest.raises(InvalidInput) as caught:
            parse("usage", message.value, MAX, message.key)
        errors[caught.value.code] += 1
    assert set(errors) == {"invalid_json", "bad_iccid", "negative_bytes"}
    assert min(errors.values()) > len(bad) / 5


def test_duplicates_and_only_duplicates_are_exact_repeats_of_earlier_records() -> None:
    messages = generate(FeedOptions(sims=50, duplicate_share=0.2, bad_share=0.1), 3000)
    earlier: set[tuple[bytes, bytes]] = set()
    duplicates = 0
    for message in messages:
        if message.kind == "duplicate":
            duplicates += 1
            assert (message.key, message.value) in earlier
            assert usage_record(orjson.loads(message.value))  # a good record resent, never a bad one
        else:
            assert (message.key, message.value) not in earlier
            earlier.add((message.key, message.value))
    assert duplicates > 400


def test_record_ids_differ_between_runs_started_at_different_times() -> None:
    options = FeedOptions(sims=10, duplicate_share=0, bad_share=0)

    def first_id(start: datetime) -> Any:
        message = UsageGenerator(options, fleet(options), start).next(start)
        return orjson.loads(message.value)["record_id"]

    assert first_id(START) != first_id(START + timedelta(seconds=1))


def test_heavy_users_cross_their_quota_in_about_ninety_seconds_at_the_default_rate() -> None:
    options = FeedOptions(sims=1000, rate=200, duplicate_share=0, bad_share=0)
    assert records_to_quota(options) == 18
    assert records_to_quota(FeedOptions(sims=10, rate=100)) == 20  # at most 20 records
    assert records_to_quota(FeedOptions(sims=1000, rate=1)) == 5  # at least 5
    # 200 records/s: two minutes of feed, in batches of 50 every 0.25 s
    messages = generate(options, 24_000, step=timedelta(seconds=0.25))
    used: Counter[str] = Counter()
    reached: dict[str, int] = {}
    sims = {s.iccid: s for s in fleet(options)}
    for position, message in enumerate(messages):
        record = orjson.loads(message.value)
        used[record["iccid"]] += record["bytes_up"] + record["bytes_down"]
        if used[record["iccid"]] >= sims[record["iccid"]].quota_bytes:
            reached.setdefault(record["iccid"], position)
    heavy = {i for i, s in sims.items() if s.heavy}
    assert set(reached) <= heavy  # light users stay far below
    assert len(reached) > 0.75 * len(heavy)  # most of them within two minutes
    seconds = sorted(position / 200 for position in reached.values())
    assert 45 < seconds[len(seconds) // 2] < 120  # the median heavy user: a minute or two


def test_a_share_of_the_fleet_shares_two_pools_that_run_out_in_about_a_minute() -> None:
    from stream_app.domain.inputs import pool

    options = FeedOptions(sims=2000, rate=400, pool_share=0.1)
    sims = fleet(options)
    members = [s for s in sims if s.pool_id is not None]
    assert 0.07 * len(sims) < len(members) < 0.13 * len(sims)
    pools = {m.key.decode(): pool(orjson.loads(m.value)) for m in pool_messages(options, sims, START)}
    assert set(pools) == {s.pool_id for s in members} and len(pools) == 2
    # the members' usage reaches the allowance after about POOL_SECONDS of feeding
    generator = UsageGenerator(options, sims, START)
    used = dict.fromkeys(pools, 0)
    pool_of = {s.iccid: s.pool_id for s in members if s.pool_id is not None}
    seconds_to_run_out: dict[str, float] = {}
    for n in range(int(options.rate) * 3 * 60):
        message = generator.next(START)
        if message.kind != "record" or pool_of.get(message.key.decode()) is None:
            continue
        pool_id = pool_of[message.key.decode()]
        value = orjson.loads(message.value)
        used[pool_id] += value["bytes_up"] + value["bytes_down"]
        if used[pool_id] >= pools[pool_id].quota_bytes:
            seconds_to_run_out.setdefault(pool_id, n / options.rate)
    assert set(seconds_to_run_out) == set(pools)
    assert all(30 < s < 120 for s in seconds_to_run_out.values())


def test_counts_add_up_by_kind() -> None:
    options = FeedOptions(sims=5)
    subs = [subscription_message(s, START) for s in fleet(options)]
    usage = generate(FeedOptions(sims=5, duplicate_share=0.2, bad_share=0.2), 500)
    counts = FeedCounts().plus(subs).plus(usage)
    kinds = Counter(m.kind for m in usage)
    assert counts == FeedCounts(5, 500, kinds["duplicate"], kinds["bad"])
    assert (
        str(counts)
        == f"5 subscriptions, 500 records sent ({kinds['duplicate']} duplicates, {kinds['bad']} bad)"
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"sims": 0},
        {"rate": 0},
        {"rate": float("inf")},
        {"auto_suspend_share": 1.5},
        {"duplicate_share": -0.1},
        {"duplicate_share": 0.6, "bad_share": 0.5},
        {"duration": 0},
        {"records": -1},
    ],
)
def test_bad_options_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FeedOptions(**bad)
