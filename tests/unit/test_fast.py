"""The fast lane decides exactly what the general engine decides (domain/fast.py).

Replay runs the same random streams twice, with the fast lane and without it: the
outputs (ids included) and every SIM's final state must be the same. The streams mix
what makes the fast lane step aside: thresholds and quotas, forecasts, month starts in
several time zones, duplicates, records beyond the horizon or from the future,
subscription changes, arrears, manual requests and expiries.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.domain.fast import DUPLICATE, Lane, fast_usage
from stream_app.domain.memory import IdMemory, id_hash
from stream_app.domain.policy import Policy
from stream_app.domain.state import canonical
from stream_app.domain.timeutil import format_time
from stream_app.settings import Settings
from stream_app.tools.replay import Replayer

from .scenario import GB, ICCID, OTHER, line, subscription_msg, t

BASE = t("2026-03-29T00:00:00Z")
ZONES = ["Asia/Shanghai", "America/New_York", "Asia/Kathmandu", None]

event = st.one_of(
    st.tuples(
        st.just("usage"),
        st.sampled_from([ICCID, OTHER]),
        st.integers(0, 30),  # record id: repeats are duplicates
        # bytes and quotas on a coarse grid, so totals land exactly on thresholds too
        st.one_of(st.sampled_from([0, 1, 25, 50, 100, 250]), st.integers(0, 400)).map(lambda n: n * 10**6),
        st.integers(-9 * 24 * 60, 30),  # start, minutes from now: some too old, some ahead
    ),
    st.tuples(
        st.just("subscription"),
        st.sampled_from([ICCID, OTHER]),
        st.sampled_from([0, 100, 200, 500, 1000, 4000]).map(lambda n: n * 10**6),  # quota
        st.booleans(),  # auto_suspend
        st.sampled_from(ZONES),
        st.sampled_from([None, [0.5], [0.25, 0.75, 1.0]]),
        st.sampled_from([None, 2, 40]),  # expires in days
        st.sampled_from([None, "throttle", "notify", "suspend"]),  # on_quota
        st.sampled_from([[], ["2026-03"], ["2026-04"], ["2026-03", "2026-04"]]),  # add-on months
    ),
    st.tuples(st.just("balance"), st.sampled_from([ICCID, OTHER]), st.integers(-100, 100)),
    st.tuples(st.just("request"), st.sampled_from([ICCID, OTHER]), st.sampled_from(["suspend", "resume"])),
)
streams = st.lists(st.tuples(st.integers(0, 3 * 24 * 60), event), min_size=1, max_size=80)


def _lines(stream: list[tuple[int, tuple[Any, ...]]]) -> list[bytes]:
    now = BASE
    lines: list[bytes] = []
    for n, (minutes, (kind, iccid, *rest)) in enumerate(stream):
        now += timedelta(minutes=minutes)
        if kind == "usage":
            record_id, total, offset = rest
            start = now + timedelta(minutes=offset)
            value = {
                "record_id": f"r{record_id}",
                "iccid": iccid,
                "carrier": "cmcc",
                "start": format_time(start),
                "end": format_time(max(start, now)),
                "bytes_up": total,
                "bytes_down": 0,
            }
            lines.append(line("sim.usage", value))
        elif kind == "subscription":
            quota, auto, zone, warn_at, expires, on_quota, packs = rest
            extra: dict[str, Any] = {}
            if on_quota is not None:
                extra["on_quota"] = on_quota
                extra["throttle_kbps"] = 64
            if packs:
                extra["addons"] = [{"addon_id": f"p{n}-{m}", "month": m, "bytes": 10**8} for m in packs]
            if zone is not None:
                extra["timezone"] = zone
            if warn_at is not None:
                extra["warn_at"] = warn_at
            if expires is not None:
                extra["expires_at"] = format_time(now + timedelta(days=expires))
            message = subscription_msg(
                iccid=iccid, quota=quota, auto_suspend=auto, updated_at=format_time(now), **extra
            )
            lines.append(line("sim.subscriptions", message))
        elif kind == "balance":
            value = {"event_id": f"b{n}", "iccid": iccid, "at": format_time(now), "balance": rest[0]}
            lines.append(line("sim.billing", {**value, "currency": "CNY"}))
        else:
            value = {
                "request_id": f"q{n}",
                "iccid": iccid,
                "action": rest[0],
                "at": format_time(now),
                "requested_by": "ops",
            }
            lines.append(line("sim.requests", value))
    return lines


def _run(lines: list[bytes], fast: bool, tracking: bool = False) -> tuple[list[bytes], dict[str, Any], int]:
    env = {"STREAM_APP_FORECAST_HORIZON": "30d"}
    if tracking:  # pending commands and their timeouts are due times too
        env["STREAM_APP_COMMAND_ACK_TIMEOUT"] = "20m"
    replayer = Replayer(Settings.from_env(env), fast=fast)
    out = [replayer.encode(o) for number, raw in enumerate(lines, 1) for o in replayer.line(number, raw)]
    states = {iccid: canonical(state) for iccid, state in replayer.states.items()}
    return out, states, replayer.fast_lane_records


@settings(max_examples=300, deadline=None)
@given(streams, st.booleans())
def test_the_fast_lane_changes_no_output_and_no_state(
    stream: list[tuple[int, tuple[Any, ...]]], tracking: bool
) -> None:
    lines = _lines(stream)
    fast_out, fast_states, _taken = _run(lines, fast=True, tracking=tracking)
    general_out, general_states, none_taken = _run(lines, fast=False, tracking=tracking)
    assert none_taken == 0
    assert [orjson.loads(o) for o in fast_out] == [orjson.loads(o) for o in general_out]
    assert fast_states == general_states


def test_the_fast_lane_takes_the_common_records() -> None:
    """The comparison above means something only if the lane is taken: a steady SIM's
    records mostly are."""
    stream: list[tuple[int, tuple[Any, ...]]] = [
        (0, ("subscription", ICCID, 40 * GB, True, None, None, None, None, []))
    ]
    stream += [(15, ("usage", ICCID, n, 1000, -14)) for n in range(200)]
    _out, _states, taken = _run(_lines(stream), fast=True)
    assert taken >= 190


def test_the_lane_steps_aside_at_each_boundary() -> None:
    policy = Policy()
    month_start, month_end = t("2026-03-01T00:00:00Z").timestamp(), t("2026-04-01T00:00:00Z").timestamp()
    lane = Lane("2026-03", int(month_start), int(month_end), due=month_end, limit=1000, forecast_quota=0)
    memory = IdMemory()
    now = t("2026-03-20T00:00:00Z").timestamp()
    week = 7 * 86400

    def fast(used: int, start: float, end: float, total: int = 10, at: float = now) -> int | None:
        digest = id_hash(f"{used}-{start}-{total}")
        return fast_usage(lane, used, memory, digest, start, end, total, at, policy)

    assert fast(0, now - 600, now - 60) == 10
    assert fast(989, now - 600, now - 60) == 999
    assert fast(990, now - 600, now - 60) is None  # reaches the limit
    early = month_start + 600
    assert fast(0, month_start - 1, early, at=early) is None  # last month's: late usage
    assert fast(0, month_start, early, at=early) is None  # too close to call: the engine decides
    assert fast(0, month_start + 1, early, at=early) == 10
    assert fast(0, now, now + 15 * 60 - 1) == 10
    assert fast(0, now, now + 15 * 60 + 1) is None  # beyond the allowed skew
    assert fast(0, now - week + 1, now) == 10
    assert fast(0, now - week - 1, now) is None  # beyond the horizon
    assert fast(0, now - 600, now - 60, at=month_end) is None  # something is due
    # a forecast: 500 of 1000 used after a third of the month projects exhaustion in
    # well under the 72 h horizon, before the month ends
    forecasting = Lane("2026-03", 0, 3 * 86400, due=3 * 86400.0, limit=1000, forecast_quota=1000)
    assert fast_usage(forecasting, 490, memory, id_hash("f"), 86000, 86300, 10, 86400.0, policy) is None
    quiet = Lane("2026-03", 0, 30 * 86400, due=30 * 86400.0, limit=1000, forecast_quota=1000)
    assert fast_usage(quiet, 0, memory, id_hash("q"), 86000, 86300, 10, 86400.0, policy) == 10
    memory.add(id_hash("seen"), 0, 0, 100)
    assert fast_usage(lane, 0, memory, id_hash("seen"), now - 600, now - 60, 5, now, policy) == DUPLICATE


def test_the_lane_stops_at_the_quota_when_the_quota_acts() -> None:
    """Even when no threshold is left to fire, reaching the quota suspends or throttles."""
    from stream_app.domain import apply_subscription, new_state, subscription
    from stream_app.domain.fast import NO_LIMIT, lane_of

    policy = Policy(warn_at=(0.5,))
    now = t("2026-03-20T00:00:00Z")
    for on_quota, limit in (("suspend", 4 * GB), ("throttle", 4 * GB), ("notify", NO_LIMIT)):
        state = new_state(ICCID, now, policy)
        message = subscription_msg(quota=3 * GB, on_quota=on_quota, throttle_kbps=64, warn_at=[0.5])
        message["addons"] = [{"addon_id": "a", "month": "2026-03", "bytes": GB}]
        apply_subscription(state, subscription(message), now, policy)
        state.usage(state.month).thresholds_fired.append(0.5)
        lane = lane_of(state, policy)
        assert lane is not None and lane.limit == limit, on_quota
        assert lane.forecast_quota == 4 * GB
