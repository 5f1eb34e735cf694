"""R17-R21 from an operator's point of view: pools (流量池) through the pure engine
(replay), plus properties of a pool's total over random members and records."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from stream_app.domain.timeutil import format_time, month_of

from .scenario import (
    GB,
    balance_line,
    commands,
    line,
    of,
    replay,
    subscription_msg,
    t,
    tick_line,
    usage_line,
)

A, B, C, D = (f"8986000000000000000{n}" for n in range(1, 5))
FLEET = "fleet-1"


def pool_line(quota: int = 3 * GB, updated_at: str = "2026-03-01T00:00:00+08:00", **extra: Any) -> bytes:
    value = {"pool_id": FLEET, "quota_bytes": quota, "auto_suspend": True, "updated_at": updated_at, **extra}
    return line("sim.pools", value)


def member(iccid: str, updated_at: str = "2026-03-01T00:00:01+08:00", **extra: Any) -> bytes:
    extra.setdefault("pool_id", FLEET)
    extra.setdefault("quota", None)
    return line("sim.subscriptions", subscription_msg(iccid=iccid, updated_at=updated_at, **extra))


def _fleet(*iccids: str) -> list[bytes]:
    return [pool_line(), *(member(i) for i in iccids)]


def _exhaust() -> list[bytes]:
    return [
        *_fleet(A, B, C),
        usage_line("2026-03-10T08:00:00+08:00", GB, iccid=A),
        usage_line("2026-03-10T09:00:00+08:00", GB, iccid=B),
        usage_line("2026-03-10T10:00:00+08:00", GB, iccid=C, record_id="the-last-straw"),
    ]


# --- R17-R18: the pool's month; a pool that runs out stops every member -------------------


def test_r18_a_pool_running_out_suspends_every_member_at_once() -> None:
    out = replay(_exhaust())
    for iccid in (A, B, C):
        assert commands(out, iccid) == [("suspend", "pool", "pool_exhausted")]
    suspends = of(out, "sim.commands", action="suspend")
    assert {s["pool_id"] for s in suspends} == {FLEET} and {s["cause"] for s in suspends} == {
        "the-last-straw"
    }
    assert [s["iccid"] for s in suspends] == [A, B, C]  # in replay, members in ICCID order
    thresholds = of(out, "sim.alerts", kind="pool_threshold")
    assert [(a["threshold"], a["used_bytes"], a["members"]) for a in thresholds] == [
        (0.8, 3 * GB, 3),
        (0.9, 3 * GB, 3),
        (1.0, 3 * GB, 3),
    ]
    assert {a["iccid"] for a in thresholds} == {None}
    assert {o["key"] for o in out if o["topic"] == "sim.alerts"} == {FLEET}


def test_r18_command_ids_do_not_depend_on_which_record_reached_the_pool() -> None:
    first = replay(_exhaust())
    other_order = _exhaust()
    other_order[-3:] = [other_order[-1], other_order[-3], other_order[-2]]
    second = replay(other_order)
    ids = {c["iccid"]: c["command_id"] for c in of(first, "sim.commands")}
    assert ids == {c["iccid"]: c["command_id"] for c in of(second, "sim.commands")}
    assert {c["cause"] for c in of(first, "sim.commands")} != {c["cause"] for c in of(second, "sim.commands")}


def test_r18_a_sim_joining_an_exhausted_pool_is_stopped_at_once() -> None:
    out = replay([*_exhaust(), member(D, updated_at="2026-03-11T00:00:00+08:00")])
    assert commands(out, D) == [("suspend", "pool", "pool_exhausted")]
    [late] = of(out, "sim.commands", iccid=D)
    assert late["cause"] == f"subscription:{D}@2026-03-10T16:00:00Z"


def test_r18_a_pool_without_auto_suspend_only_warns() -> None:
    lines = _exhaust()
    lines[0] = pool_line(auto_suspend=False)
    out = replay(lines)
    assert of(out, "sim.commands") == []
    assert len(of(out, "sim.alerts", kind="pool_threshold")) == 3


def test_r17_late_usage_adds_to_its_own_month_and_stops_no_one_now() -> None:
    out = replay(
        [
            *_fleet(A, B),
            usage_line("2026-03-30T08:00:00+08:00", GB + GB // 2, iccid=A),
            tick_line("2026-04-01T00:00:30+08:00"),
            # a March record arriving in April pushes March over 3 GB: no one stops
            usage_line("2026-03-31T23:00:00+08:00", 2 * GB, iccid=B, minutes=60 * 24 + 5),
        ]
    )
    assert of(out, "sim.commands") == []
    march = [a for a in of(out, "sim.alerts", kind="pool_threshold") if a["month"] == "2026-03"]
    assert march == []  # thresholds are for the current month, as for a SIM


# --- R19: the month start, a lifted quota, a SIM leaving -------------------------------------


def test_r19_the_month_start_in_the_pools_time_zone_restores_every_member() -> None:
    lines = _exhaust()
    lines[0] = pool_line(timezone="UTC")
    out = replay([*lines, tick_line("2026-04-01T00:00:30Z")])
    restores = of(out, "sim.commands", action="restore")
    assert [(r["iccid"], r["trigger"], r["at"]) for r in restores] == [
        (iccid, "month_start", "2026-04-01T00:00:00Z") for iccid in (A, B, C)
    ]


def test_r19_a_pool_update_or_add_on_lifting_the_quota_restores_every_member() -> None:
    pack = {"addon_id": "pool-pack", "month": "2026-03", "bytes": GB}
    out = replay([*_exhaust(), pool_line(updated_at="2026-03-11T00:00:00+08:00", addons=[pack])])
    restores = of(out, "sim.commands", action="restore")
    assert [(r["iccid"], r["trigger"], r["cause"]) for r in restores] == [
        (iccid, "quota_raised", f"pool:{FLEET}@2026-03-10T16:00:00Z") for iccid in (A, B, C)
    ]
    # and a second exhaustion in the same month has ids of its own
    again = replay(
        [
            *_exhaust(),
            pool_line(updated_at="2026-03-11T00:00:00+08:00", addons=[pack]),
            usage_line("2026-03-12T08:00:00+08:00", GB, iccid=A),
        ]
    )
    suspends = [c["command_id"] for c in of(again, "sim.commands", action="suspend", iccid=A)]
    assert len(suspends) == 2 and len(set(suspends)) == 2


def test_r19_a_sim_leaving_the_pool_is_restored_and_no_longer_counts_for_it() -> None:
    out = replay(
        [
            *_exhaust(),
            member(A, updated_at="2026-03-11T00:00:00+08:00", pool_id=None, quota=10 * GB),
            usage_line("2026-03-12T08:00:00+08:00", GB, iccid=A),
            pool_line(updated_at="2026-03-13T00:00:00+08:00", quota=4 * GB),
        ]
    )
    assert commands(out, A) == [("suspend", "pool", "pool_exhausted"), ("restore", "pool", "pool_left")]
    # 3 GB counted while members: a 4 GB pool has room again, B and C are restored
    assert commands(out, B)[-1] == ("restore", "pool", "quota_raised")


def test_r19_a_member_stopped_for_another_reason_too_stays_stopped() -> None:
    out = replay(
        [
            *_exhaust(),
            balance_line("2026-03-11T00:00:00+08:00", -5, iccid=A),
            tick_line("2026-04-01T00:00:30+08:00"),
        ]
    )
    assert commands(out, A) == [("suspend", "pool", "pool_exhausted")]
    [cleared] = [a for a in of(out, "sim.audit", iccid=A) if a["change"] == "reason_cleared"]
    assert (cleared["reason"], cleared["reasons_after"], cleared["status_after"]) == (
        "pool",
        ["arrears"],
        "suspended",
    )


# --- R20-R21: warnings, unknown pools, a member's own cap ----------------------------------


def test_r20_an_unknown_pool_is_alerted_once_a_month_and_evaluated_when_defined() -> None:
    out = replay(
        [
            member(A),
            member(B),
            usage_line("2026-03-10T08:00:00+08:00", 2 * GB, iccid=A),
            usage_line("2026-03-10T09:00:00+08:00", 2 * GB, iccid=B),
            pool_line(quota=3 * GB, updated_at="2026-03-11T00:00:00+08:00"),
        ]
    )
    [unknown] = of(out, "sim.alerts", kind="unknown_pool")
    assert (unknown["pool_id"], unknown["month"], unknown["used_bytes"]) == (FLEET, "2026-03", 2 * GB)
    assert commands(out, A) == commands(out, B) == [("suspend", "pool", "pool_exhausted")]


def test_r20_a_pool_forecast_warns_before_the_pool_runs_out() -> None:
    out = replay([*_fleet(A), usage_line("2026-03-02T08:00:00+08:00", 2 * GB, iccid=A)])
    [forecast] = of(out, "sim.alerts", kind="pool_forecast")
    assert forecast["pool_id"] == FLEET and forecast["quota_bytes"] == 3 * GB and "exhaustion_at" in forecast


def test_r21_a_members_own_cap_stops_it_alone() -> None:
    out = replay(
        [
            pool_line(quota=100 * GB),
            member(A, quota=GB, auto_suspend=True),
            member(B),
            usage_line("2026-03-10T08:00:00+08:00", 2 * GB, iccid=A),
        ]
    )
    assert commands(out, A) == [("suspend", "quota", "usage")]
    assert commands(out, B) == []


# --- properties -------------------------------------------------------------------------

BASE = t("2026-03-05T00:00:00+08:00")
streams = st.lists(
    st.tuples(
        st.integers(0, 6 * 60),  # minutes after the previous line
        st.sampled_from([A, B, C]),
        st.integers(0, 9),  # record id: repeats are the carrier's duplicates
        st.integers(0, GB),
        st.sampled_from(["usage", "usage", "usage", "leave", "join"]),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(streams)
# A leave and a join with the same updated_at: the join is not newer, so it is ignored.
@example([(0, B, 0, 0, "leave"), (0, B, 0, 0, "join"), (0, B, 0, 1, "usage")])
def test_a_pools_total_is_what_its_members_counted_while_members(
    stream: list[tuple[int, str, int, int, str]],
) -> None:
    """Whatever the order, duplicates and comings and goings of its members."""
    lines = _fleet(A, B, C)
    lines[0] = pool_line(quota=10**15)  # never runs out: only the total is looked at
    now = BASE
    member_of = {A: True, B: True, C: True}
    updated = dict.fromkeys(member_of, t("2026-03-01T00:00:01+08:00"))
    counted: set[tuple[str, int]] = set()
    expected: dict[str, int] = defaultdict(int)
    for minutes, iccid, record, total, kind in stream:
        now += timedelta(minutes=minutes)
        if kind == "usage":
            start = now - timedelta(minutes=10)
            lines.append(usage_line(format_time(start), total, iccid=iccid, record_id=f"{iccid}-{record}"))
            if (iccid, record) not in counted:
                counted.add((iccid, record))
                if member_of[iccid]:
                    expected[month_of(start, "Asia/Shanghai")] += total - total // 3 + total // 3
        else:
            joined = kind == "join"
            extra = {"pool_id": FLEET if joined else None, "quota": None if joined else GB}
            lines.append(member(iccid, updated_at=format_time(now), **extra))
            if now > updated[iccid]:  # one no newer than the SIM's subscription is ignored
                member_of[iccid], updated[iccid] = joined, now
    lines.append(pool_line(quota=10**15 - 1, updated_at=format_time(now + timedelta(seconds=1))))
    from stream_app.settings import Settings
    from stream_app.tools.replay import Replayer

    replayer = Replayer(Settings.from_env({"STREAM_APP_DEDUPE_HORIZON": "60d"}))
    for number, raw in enumerate(lines, 1):
        replayer.line(number, raw)
    pool = replayer.pools[FLEET]
    assert {m: u.used for m, u in pool.months.items() if u.used} == {m: v for m, v in expected.items() if v}
    # and it is the sum of what each member says it counted for the pool
    for month, usage in pool.months.items():
        said = sum(state.pool_used.get(FLEET, {}).get(month, 0) for state in replayer.states.values())
        assert usage.used == said


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([A, B, C]), st.integers(1, 10**6)), max_size=30), st.data())
def test_reports_repeated_or_reordered_change_nothing(
    deltas: list[tuple[str, int]], data: st.DataObject
) -> None:
    """Live, a member's reports may come twice or out of order (a crash, a rebalance):
    the pool keeps the largest figure per member and month, so its total is exact."""
    from stream_app.domain import Policy
    from stream_app.domain.pools import USAGE, Report, apply_report, new_pool

    policy = Policy()
    now = t("2026-03-10T00:00:00+08:00")
    running: dict[str, int] = defaultdict(int)
    reports: list[Report] = []
    for iccid, delta in deltas:
        running[iccid] += delta
        reports.append(Report(FLEET, iccid, USAGE, "2026-03", running[iccid], f"r{len(reports)}"))
    delivered = reports + data.draw(st.lists(st.sampled_from(reports), max_size=10)) if reports else []
    delivered = data.draw(st.permutations(delivered))
    state = new_pool(FLEET, now, policy)
    for report in delivered:
        apply_report(state, report, now, policy)
    assert state.usage("2026-03").used == sum(running.values())
    assert state.roster == set(running)


def test_a_sim_that_left_is_no_longer_told_anything() -> None:
    from stream_app.settings import Settings
    from stream_app.tools.replay import Replayer

    replayer = Replayer(Settings.from_env({}))
    lines = [*_fleet(A, B), member(A, updated_at="2026-03-02T00:00:00+08:00", pool_id=None, quota=GB)]
    for number, raw in enumerate(lines, 1):
        replayer.line(number, raw)
    assert replayer.pools[FLEET].roster == {B}
