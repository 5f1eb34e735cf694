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
    assert "month 2026-03: 2.00 GB used (200% of 1.00 GB), 0 B left" in text
    assert "next: month_start at 2026-03-31T16:00:00Z" in text
    assert "suspend quota/usage  cause cdr-9" in text


def test_a_person_sees_add_ons_the_months_quota_and_throttling() -> None:
    policy = Policy()
    now = t("2026-03-20T12:00:00+08:00")
    state = new_state(ICCID, now, policy)
    message = subscription_msg(quota=GB, on_quota="throttle", throttle_kbps=256)
    message["addons"] = [{"addon_id": "pack-7", "month": "2026-03", "bytes": GB}]
    apply_subscription(state, subscription(message), now, policy)
    apply_usage(state, usage_record(usage_msg("2026-03-20T11:00:00+08:00", 2 * GB)), now, policy)
    body = describe(state, now, policy)
    assert (body["month_quota_bytes"], body["throttled"], body["status"]) == (2 * GB, True, "active")
    assert body["addons"] == [{"addon_id": "pack-7", "month": "2026-03", "bytes": GB}]
    text = render(body)
    assert text.splitlines()[0] == f"SIM {ICCID}  ACTIVE  THROTTLED  (reasons: none)"
    assert "at the quota: throttle to 256 kbps" in text
    assert "month 2026-03: 2.00 GB used (100% of 2.00 GB), 0 B left" in text
    assert "  add-on pack-7: +1.00 GB for 2026-03" in text


def test_a_person_sees_the_sims_pool_and_whether_it_ran_out() -> None:
    from stream_app.settings import Settings
    from stream_app.tools.replay import Replayer

    from .scenario import line, usage_line

    member = subscription_msg(quota=None, pool_id="fleet-1")
    lines = [
        line(
            "sim.pools",
            {
                "pool_id": "fleet-1",
                "quota_bytes": GB,
                "auto_suspend": True,
                "updated_at": "2026-03-01T00:00:00Z",
            },
        ),
        line("sim.subscriptions", member),
        usage_line("2026-03-10T08:00:00+08:00", 2 * GB),
    ]
    replayer = Replayer(Settings.from_env({}))
    for number, raw in enumerate(lines, 1):
        replayer.line(number, raw)
    now = t("2026-03-10T09:00:00+08:00")
    body = describe(replayer.states[ICCID], now, Policy())
    assert body["pool"] == {
        "pool_id": "fleet-1",
        "exhausted": True,
        "until": "2026-03-31T16:00:00Z",
        "counted_this_month": 2 * GB,
    }
    assert "pool fleet-1: ran out, held until 2026-03-31T16:00:00Z; 2.00 GB counted for it" in render(body)
