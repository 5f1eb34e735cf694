"""Properties of the engine that hold whatever the data: exact counting, determinism."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app import codec
from stream_app.domain import Policy, apply_subscription, apply_usage, new_state, subscription, usage_record
from stream_app.domain.engine import apply_input, apply_many
from stream_app.domain.state import canonical
from stream_app.domain.timeutil import format_time, month_of

from .scenario import GB, ICCID, OTHER, line, replay, subscription_msg, t, tick_line

BASE = t("2026-03-01T00:00:00+08:00")
NOW = t("2026-04-05T00:00:00+08:00")

records = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=34 * 24 * 60),  # start, minutes after BASE
        st.integers(min_value=0, max_value=3 * GB),  # bytes
        st.sampled_from([ICCID, OTHER]),
    ),
    min_size=1,
    max_size=40,
)


def _usage(i: int, start_min: int, total: int, iccid: str) -> dict[str, object]:
    start = BASE + timedelta(minutes=start_min)
    return {
        "record_id": f"cdr-{i}",
        "iccid": iccid,
        "carrier": "cmcc",
        "start": format_time(start),
        "end": format_time(start + timedelta(minutes=5)),
        "bytes_up": total // 2,
        "bytes_down": total - total // 2,
    }


@settings(max_examples=150, deadline=None)
@given(records, st.data())
def test_counted_bytes_equal_bytes_of_distinct_records_within_the_horizon(
    recs: list[tuple[int, int, str]], data: st.DataObject
) -> None:
    policy = Policy(dedupe_horizon=timedelta(days=14))
    messages = [_usage(i, *rec) for i, rec in enumerate(recs)]
    # every record delivered 1-3 times, in any order
    copies = [m for m in messages for _ in range(data.draw(st.integers(1, 3)))]
    order = data.draw(st.permutations(copies))
    states = {ICCID: new_state(ICCID, NOW, policy), OTHER: new_state(OTHER, NOW, policy)}
    for message in order:
        record = usage_record(message)
        apply_usage(states[record.iccid], record, NOW, policy)

    expected: dict[tuple[str, str], int] = defaultdict(int)
    for message in messages:
        record = usage_record(message)
        if record.start >= NOW - policy.dedupe_horizon:
            expected[(record.iccid, month_of(record.start, policy.timezone))] += record.total_bytes
    counted = {
        (iccid, month): usage.used_bytes
        for iccid, state in states.items()
        for month, usage in state.months.items()
        if usage.used_bytes
    }
    assert counted == {k: v for k, v in expected.items() if v}


def _scenario_lines(recs: list[tuple[int, int, str]]) -> list[bytes]:
    lines = [
        line("sim.subscriptions", subscription_msg(quota=4 * GB, updated_at="2026-02-28T00:00:00Z")),
        line(
            "sim.subscriptions",
            subscription_msg(
                iccid=OTHER, quota=2 * GB, auto_suspend=False, updated_at="2026-02-28T00:00:00Z"
            ),
        ),
    ]
    ordered = sorted(enumerate(recs), key=lambda item: item[1][0])
    lines += [line("sim.usage", _usage(i, *rec)) for i, rec in ordered]
    lines.append(tick_line("2026-05-02T00:00:00+08:00"))
    return lines


@settings(max_examples=100, deadline=None)
@given(records, st.data())
def test_injecting_duplicates_changes_no_output(
    recs: list[tuple[int, int, str]], data: st.DataObject
) -> None:
    lines = _scenario_lines(recs)
    usage_positions = [i for i, raw in enumerate(lines) if b'"sim.usage"' in raw]
    with_dupes = list(lines)
    for position in sorted(data.draw(st.lists(st.sampled_from(usage_positions), max_size=10)), reverse=True):
        # a copy anywhere after its original never moves now (its end is already past)
        target = data.draw(st.integers(position + 1, len(lines) - 1))
        with_dupes.insert(target, lines[position])
    # Within the horizon, that is: a copy arriving after it is a dead letter by R2.
    env = {"STREAM_APP_DEDUPE_HORIZON": "60d"}
    assert replay(with_dupes, env) == replay(lines, env)


@settings(max_examples=60, deadline=None)
@given(records)
def test_replay_twice_gives_identical_output(recs: list[tuple[int, int, str]]) -> None:
    lines = _scenario_lines(recs)
    assert replay(lines) == replay(lines)


@settings(max_examples=100, deadline=None)
@given(records)
def test_commands_alternate_suspend_restore_per_sim(recs: list[tuple[int, int, str]]) -> None:
    out = replay(_scenario_lines(recs))
    actions: dict[str, list[str]] = defaultdict(list)
    for o in out:
        if o["topic"] == "sim.commands":
            actions[o["key"]].append(o["value"]["action"])
    for sequence in actions.values():
        assert sequence == ["suspend", "restore"] * (len(sequence) // 2) + ["suspend"] * (len(sequence) % 2)
    assert len({o["value"]["command_id"] for o in out if o["topic"] == "sim.commands"}) == sum(
        map(len, actions.values())
    )


@settings(max_examples=100, deadline=None)
@given(records)
def test_state_survives_the_table_codec(recs: list[tuple[int, int, str]]) -> None:
    policy = Policy()
    state = new_state(ICCID, NOW, policy)
    apply_subscription(state, subscription(subscription_msg(quota=GB, warn_at=[0.5, 1.0])), NOW, policy)
    for i, rec in enumerate(recs):
        apply_usage(state, usage_record(_usage(i, rec[0], rec[1], ICCID)), NOW, policy)
    table = dict(codec.sim_entries(codec.stored_of(state, policy)))
    stored = codec.load_sim(ICCID, table.get, policy)
    assert stored is not None
    assert canonical(stored.state()) == canonical(state)


lifecycle_events = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=20 * 24),  # hours since the previous event
        st.sampled_from(["usage", "usage", "debt", "pay", "suspend", "resume", "renew", "tick"]),
        st.integers(min_value=0, max_value=2 * GB),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(lifecycle_events, st.integers(min_value=0, max_value=120), st.booleans())
def test_commands_alternate_and_nothing_follows_cancel(
    events: list[tuple[int, str, int]], expires_in_days: int, auto_suspend: bool
) -> None:
    """Whatever arrives in whatever order of reasons: never two suspends without a restore
    between them, never a restore of a SIM that is not suspended, nothing after cancel."""
    now = BASE
    lines = [
        line(
            "sim.subscriptions",
            subscription_msg(
                quota=GB,
                auto_suspend=auto_suspend,
                updated_at=format_time(now),
                expires_at=format_time(now + timedelta(days=expires_in_days)),
            ),
        )
    ]
    for n, (hours, kind, amount) in enumerate(events):
        now += timedelta(hours=hours)
        at = format_time(now)
        if kind == "usage":
            lines.append(
                line(
                    "sim.usage",
                    {
                        **_usage(n, 0, amount, ICCID),
                        "start": format_time(now - timedelta(minutes=5)),
                        "end": at,
                    },
                )
            )
        elif kind in ("debt", "pay"):
            lines.append(
                line(
                    "sim.billing",
                    {
                        "event_id": f"e{n}",
                        "iccid": ICCID,
                        "at": at,
                        "balance": -100 if kind == "debt" else 100,
                        "currency": "CNY",
                    },
                )
            )
        elif kind in ("suspend", "resume"):
            lines.append(
                line(
                    "sim.requests",
                    {"request_id": f"q{n}", "iccid": ICCID, "action": kind, "at": at, "requested_by": "ops"},
                )
            )
        elif kind == "renew":
            lines.append(
                line(
                    "sim.subscriptions",
                    subscription_msg(
                        quota=GB,
                        auto_suspend=auto_suspend,
                        updated_at=at,
                        expires_at=format_time(now + timedelta(days=amount % 90)),
                    ),
                )
            )
        else:
            lines.append(tick_line(at))
    out = replay(lines)
    actions = [o["value"]["action"] for o in out if o["topic"] == "sim.commands"]
    if "cancel" in actions:
        assert actions.index("cancel") == len(actions) - 1
        actions.pop()
    assert actions == ["suspend", "restore"] * (len(actions) // 2) + ["suspend"] * (len(actions) % 2)
    # the audit trail accounts for every command: reasons before/after chain without gaps
    trail = [o["value"] for o in out if o["topic"] == "sim.audit"]
    for previous, current in itertools.pairwise(trail):
        assert previous["reasons_after"] == current["reasons_before"]


@settings(max_examples=60, deadline=None)
@given(records)
def test_a_batch_for_one_sim_gives_what_the_inputs_give_one_by_one(recs: list[tuple[int, int, str]]) -> None:
    policy = Policy()
    items = [subscription(subscription_msg(quota=GB))] + [
        usage_record(_usage(i, start, total, ICCID)) for i, (start, total, _) in enumerate(recs)
    ]
    one_by_one = new_state(ICCID, NOW, policy)
    outputs = [o for item in items for o in apply_input(one_by_one, item, NOW, policy).outputs]
    batched, steps = apply_many(new_state(ICCID, NOW, policy), items, NOW, policy)
    assert [o for step in steps for o in step.outputs] == outputs
    assert canonical(batched) == canonical(one_by_one)
