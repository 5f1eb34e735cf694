from __future__ import annotations

from stream_app.domain import Policy, apply_subscription, apply_usage, new_state, subscription, usage_record
from stream_app.domain.describe import describe
from stream_app.ops.simview import render

from .scenario import GB, ICCID, subscription_msg, t, usage_msg


def test_a_person_sees_status_reason_usage_and_the_last_command() -> None:
    policy = Policy()
    now = t("2026-03-20T12:00:00+08:00")
    state = new_state(ICCID, now, policy)
    apply_subscription(state, subscription(subscription_msg(quota=GB)), now, policy)
    apply_usage(
        state, usage_record(usage_msg("2026-03-20T11:00:00+08:00", 2 * GB, record_id="cdr-9")), now, policy
    )
    text = render(describe(state, now, policy))
    assert text.splitlines()[0] == f"SIM {ICCID}  SUSPENDED  (reasons: quota)"
    assert "month 2026-03: 2.00 GB used (200%), 0 B left" in text
    assert "next: month_start at 2026-03-31T16:00:00Z" in text
    assert "suspend quota/usage  cause cdr-9" in text
