"""R22-R23 from an operator's point of view: add-on packs (加油包) and what happens at
the quota (suspend, throttle or notify), through the pure engine (replay)."""

from __future__ import annotations

from typing import Any

from .scenario import (
    GB,
    ICCID,
    balance_line,
    commands,
    of,
    replay,
    sub_line,
    tick_line,
    usage_line,
)

MARCH_PACK = {"addon_id": "pack-1", "month": "2026-03", "bytes": GB}


def _plan(updated_at: str = "2026-03-01T00:00:00+08:00", **extra: Any) -> bytes:
    return sub_line(quota=GB, updated_at=updated_at, **extra)


# --- R22: a month's quota is the plan's plus that month's add-ons ------------------------


def test_r22_an_add_on_lifting_the_quota_above_the_usage_restores_the_sim() -> None:
    out = replay(
        [
            _plan(),
            usage_line("2026-03-10T08:00:00+08:00", GB + GB // 2),
            _plan("2026-03-11T00:00:00+08:00", addons=[MARCH_PACK]),
        ]
    )
    assert commands(out) == [("suspend", "quota", "usage"), ("restore", "quota", "quota_raised")]
    [restore] = of(out, "sim.commands", action="restore")
    assert restore["cause"] == f"subscription:{ICCID}@2026-03-10T16:00:00Z"


def test_r22_an_add_on_counts_only_for_its_month() -> None:
    april_pack = {**MARCH_PACK, "month": "2026-04"}
    out = replay(
        [
            _plan(addons=[april_pack]),
            usage_line("2026-03-10T08:00:00+08:00", GB + 1),  # March's quota is the plan's: 1 GB
            tick_line("2026-04-01T00:00:30+08:00"),
            usage_line("2026-04-02T08:00:00+08:00", GB + GB * 7 // 10),  # April's: 2 GB
        ]
    )
    assert commands(out) == [("suspend", "quota", "usage"), ("restore", "quota", "month_start")]
    april = of(out, "sim.alerts", kind="quota_threshold", month="2026-04")
    assert {a["quota_bytes"] for a in april} == {2 * GB}


def test_r22_an_addon_id_counts_once_however_often_it_is_listed() -> None:
    out = replay(
        [
            _plan(addons=[MARCH_PACK, MARCH_PACK]),
            _plan("2026-03-02T00:00:00+08:00", addons=[MARCH_PACK]),
            # a pack once counted stays counted when a later version no longer lists it
            _plan("2026-03-03T00:00:00+08:00"),
            usage_line("2026-03-10T08:00:00+08:00", 2 * GB),  # 1 + 1 GB: reached, not 3 GB
        ]
    )
    assert commands(out) == [("suspend", "quota", "usage")]
    [at_100] = of(out, "sim.alerts", kind="quota_threshold", threshold=1.0)
    assert at_100["quota_bytes"] == 2 * GB


def test_r22_thresholds_and_forecasts_use_the_quota_with_add_ons() -> None:
    out = replay(
        [
            _plan(addons=[MARCH_PACK]),
            usage_line("2026-03-02T08:00:00+08:00", GB),  # 50 % of 2 GB: no threshold yet
            usage_line("2026-03-02T09:00:00+08:00", GB // 2 + GB // 10),  # 80 % of 2 GB
        ]
    )
    thresholds = of(out, "sim.alerts", kind="quota_threshold")
    assert [(a["threshold"], a["quota_bytes"]) for a in thresholds] == [(0.8, 2 * GB)]
    [forecast] = of(out, "sim.alerts", kind="quota_forecast")
    assert forecast["quota_bytes"] == 2 * GB


def test_r22_a_manual_suspend_is_judged_against_the_quota_with_add_ons() -> None:
    from .scenario import request_line

    out = replay(
        [
            _plan(addons=[MARCH_PACK]),
            usage_line("2026-03-02T08:00:00+08:00", GB + GB // 10),  # over the plan, under 2 GB
            request_line("2026-03-02T09:00:00+08:00", "suspend"),
        ]
    )
    assert commands(out) == [("suspend", "manual", "request")]


# --- R23: on_quota, and throttling as a dimension of its own -----------------------------


def _throttled(updated_at: str = "2026-03-01T00:00:00+08:00", **extra: Any) -> bytes:
    return _plan(updated_at, on_quota="throttle", throttle_kbps=128, **extra)


def test_r23_a_throttle_sim_is_slowed_at_its_quota_not_suspended() -> None:
    out = replay([_throttled(), usage_line("2026-03-10T08:00:00+08:00", GB)])
    assert commands(out) == [("throttle", "quota", "usage")]
    [throttle] = of(out, "sim.commands")
    assert throttle["speed_kbps"] == 128 and throttle["reasons"] == [] and throttle["attempt"] == 1
    [audit] = of(out, "sim.audit")
    assert (audit["change"], audit["status_before"], audit["status_after"]) == (
        "throttled",
        "active",
        "active",
    )
    assert len(of(out, "sim.alerts", kind="quota_threshold")) == 3  # alerts as before


def test_r23_throttling_ends_at_the_month_start_or_when_the_quota_is_lifted() -> None:
    out = replay(
        [
            _throttled(),
            usage_line("2026-03-10T08:00:00+08:00", GB),
            _throttled("2026-03-11T00:00:00+08:00", addons=[MARCH_PACK]),
            usage_line("2026-03-12T08:00:00+08:00", GB),
            tick_line("2026-04-01T00:00:30+08:00"),
        ]
    )
    assert commands(out) == [
        ("throttle", "quota", "usage"),
        ("unthrottle", "quota", "quota_raised"),
        ("throttle", "quota", "usage"),
        ("unthrottle", "quota", "month_start"),
    ]
    [*_, month_start] = of(out, "sim.commands")
    assert month_start["at"] == "2026-03-31T16:00:00Z"


def test_r23_a_throttled_sim_that_pays_its_arrears_stays_throttled() -> None:
    out = replay(
        [
            _throttled(),
            usage_line("2026-03-10T08:00:00+08:00", GB),
            balance_line("2026-03-11T08:00:00+08:00", -100),
            balance_line("2026-03-12T08:00:00+08:00", 0),
        ]
    )
    assert commands(out) == [
        ("throttle", "quota", "usage"),
        ("suspend", "arrears", "balance"),
        ("restore", "arrears", "payment"),
    ]
    [_throttle, suspend, restore] = of(out, "sim.commands")
    assert suspend["reasons"] == ["arrears"] and restore["reasons"] == []


def test_r23_on_quota_overrides_auto_suspend() -> None:
    notify = replay(
        [_plan(auto_suspend=True, on_quota="notify"), usage_line("2026-03-10T08:00:00+08:00", 2 * GB)]
    )
    assert commands(notify) == []
    assert len(of(notify, "sim.alerts", kind="quota_threshold")) == 3
    suspend = replay(
        [_plan(auto_suspend=False, on_quota="suspend"), usage_line("2026-03-10T08:00:00+08:00", 2 * GB)]
    )
    assert commands(suspend) == [("suspend", "quota", "usage")]


def test_r23_throttle_without_a_speed_is_refused() -> None:
    out = replay([_plan(on_quota="throttle")])
    [letter] = of(out, "sim.deadletter")
    assert letter["error"] == "missing_field" and "throttle_kbps" in letter["detail"]
