"""What the SIM query API says about one SIM (pure: describe())."""

from __future__ import annotations

from stream_app.domain import Policy, apply_subscription, apply_usage, new_state, subscription, usage_record
from stream_app.domain.describe import describe

from .scenario import GB, ICCID, subscription_msg, t, usage_msg


def test_describe_answers_why_a_sim_is_stopped_and_what_comes_next() -> None:
    policy = Policy()
    now = t("2026-03-20T12:00:00+08:00")
    state = new_state(ICCID, now, policy)
    apply_subscription(state, subscription(subscription_msg(quota=GB)), now, policy)
    apply_usage(
        state, usage_record(usage_msg("2026-03-20T11:00:00+08:00", 2 * GB, record_id="x")), now, policy
    )
    body = describe(state, now, policy)
    assert (body["status"], body["reasons"], body["used_bytes"], body["remaining_bytes"]) == (
        "suspended",
        ["quota"],
        2 * GB,
        0,
    )
    assert body["next_due"] == {"event": "month_start", "at": "2026-03-31T16:00:00Z"}
    assert [(c["action"], c["cause"]) for c in body["last_commands"]] == [("suspend", "x")]
    assert body["plan"]["timezone"] == "Asia/Shanghai"


def test_describe_shows_a_due_month_start_before_the_sweep_without_changing_the_state() -> None:
    policy = Policy()
    now = t("2026-03-20T12:00:00+08:00")
    state = new_state(ICCID, now, policy)
    apply_subscription(state, subscription(subscription_msg(quota=GB)), now, policy)
    apply_usage(state, usage_record(usage_msg("2026-03-20T11:00:00+08:00", GB // 2)), now, policy)
    later = describe(state, t("2026-04-01T00:00:05+08:00"), policy)
    assert (later["month"], later["used_bytes"], later["status"]) == ("2026-04", 0, "active")
    assert state.month == "2026-03"  # the stored state is untouched
    body = describe(state, now, policy)
    assert body["forecast"] is not None and body["forecast"]["before_month_end"] is False


def test_describe_survives_a_quota_that_would_last_for_millennia() -> None:
    policy = Policy()
    now = t("2026-03-20T12:00:00+08:00")
    state = new_state(ICCID, now, policy)
    apply_subscription(state, subscription(subscription_msg(quota=10**15)), now, policy)
    apply_usage(state, usage_record(usage_msg("2026-03-20T11:00:00+08:00", 15)), now, policy)
    assert describe(state, now, policy)["forecast"] == {"exhaustion_at": None, "before_month_end": False}
