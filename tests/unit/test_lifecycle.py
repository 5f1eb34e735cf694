"""R5 and R10-R13: arrears, expiry with grace and cancellation, retention fees, manual
stop and resume, and how the four reasons combine. Operator scenarios through replay."""

from __future__ import annotations

from .scenario import (
    GB,
    ICCID,
    OTHER,
    balance_line,
    commands,
    of,
    replay,
    request_line,
    sub_line,
    tick_line,
    usage_line,
)

EXPIRING = "2026-03-15T00:00:00+08:00"


def expiring_sub(**kwargs: object) -> bytes:
    kwargs.setdefault("expires_at", EXPIRING)
    return sub_line(**kwargs)


# --- R10: arrears -------------------------------------------------------------------------


def test_r10_negative_balance_suspends_and_payment_restores() -> None:
    out = replay(
        [
            sub_line(),
            balance_line("2026-03-05T10:00:00+08:00", -250, event_id="bill-1"),
            balance_line("2026-03-06T10:00:00+08:00", -50),  # still in arrears: nothing new
            balance_line("2026-03-07T10:00:00+08:00", 0, event_id="pay-1"),
        ]
    )
    assert commands(out) == [("suspend", "arrears", "balance"), ("restore", "arrears", "payment")]
    suspend, restore = of(out, "sim.commands")
    assert (suspend["cause"], restore["cause"]) == ("bill-1", "pay-1")


def test_r10_an_older_balance_event_does_not_override_a_newer_one() -> None:
    out = replay(
        [
            sub_line(),
            balance_line("2026-03-07T10:00:00+08:00", 100),
            balance_line("2026-03-05T10:00:00+08:00", -250),  # arrives late, is older
        ]
    )
    assert commands(out) == []


def test_r10_payment_restores_only_when_no_other_reason_remains() -> None:
    out = replay(
        [
            sub_line(quota=1 * GB),
            usage_line("2026-03-10T00:00:00+08:00", 2 * GB),
            balance_line("2026-03-11T00:00:00+08:00", -1),
            balance_line("2026-03-12T00:00:00+08:00", 500),
        ]
    )
    assert commands(out) == [("suspend", "quota", "usage")]
    changes = [(a["change"], a["reason"], a["reasons_after"]) for a in of(out, "sim.audit")]
    assert changes == [
        ("reason_added", "quota", ["quota"]),
        ("reason_added", "arrears", ["arrears", "quota"]),
        ("reason_cleared", "arrears", ["quota"]),
    ]


def test_r5_quota_and_arrears_then_month_start_then_payment() -> None:
    out = replay(
        [
            sub_line(quota=1 * GB),
            usage_line("2026-03-10T00:00:00+08:00", 2 * GB),
            balance_line("2026-03-20T00:00:00+08:00", -100),
            tick_line("2026-04-01T00:00:30+08:00"),  # quota cleared, arrears holds the SIM
            balance_line("2026-04-03T00:00:00+08:00", 0),
        ]
    )
    assert commands(out) == [("suspend", "quota", "usage"), ("restore", "arrears", "payment")]
    month_start = [a for a in of(out, "sim.audit") if a["trigger"] == "month_start"]
    assert [(a["reasons_before"], a["reasons_after"]) for a in month_start] == [
        (["arrears", "quota"], ["arrears"])
    ]


# --- R11: expiry, renewal, grace, cancellation, retention fees ----------------------------


def test_r11_expiry_suspends_at_expires_at_and_charges_the_month() -> None:
    out = replay([expiring_sub(), tick_line("2026-03-15T00:00:30+08:00")])
    [suspend] = of(out, "sim.commands")
    assert (suspend["action"], suspend["reason"], suspend["trigger"]) == ("suspend", "expiry", "expiry_time")
    assert suspend["at"] == "2026-03-14T16:00:00Z"
    [charge] = of(out, "sim.charges")
    assert (charge["month"], charge["amount"], charge["currency"], charge["kind"]) == (
        "2026-03",
        500,
        "CNY",
        "number_retention",
    )


def test_r11_renewal_within_grace_restores_and_stops_the_fees() -> None:
    out = replay(
        [
            expiring_sub(),
            tick_line("2026-04-10T00:00:00+08:00"),
            sub_line(expires_at="2027-03-15T00:00:00+08:00", updated_at="2026-04-10T09:00:00+08:00"),
            tick_line("2026-06-01T00:00:30+08:00"),
        ]
    )
    assert commands(out) == [("suspend", "expiry", "expiry_time"), ("restore", "expiry", "renewal")]
    assert [c["month"] for c in of(out, "sim.charges")] == ["2026-03", "2026-04"]


def test_r11_a_subscription_update_that_does_not_extend_expiry_is_no_renewal() -> None:
    out = replay(
        [
            expiring_sub(),
            tick_line("2026-04-10T00:00:00+08:00"),
            expiring_sub(quota=20 * GB, updated_at="2026-04-10T09:00:00+08:00"),
        ]
    )
    assert commands(out) == [("suspend", "expiry", "expiry_time")]


def test_r11_grace_elapsed_cancels_after_a_fee_for_every_started_month() -> None:
    out = replay([expiring_sub(), tick_line("2026-07-01T00:00:00+08:00")])
    assert commands(out) == [("suspend", "expiry", "expiry_time"), ("cancel", "expiry", "grace_elapsed")]
    cancel = of(out, "sim.commands", action="cancel")[0]
    assert cancel["at"] == "2026-06-14T16:00:00Z"  # 3 calendar months after expiry
    assert cancel["reasons"] == ["expiry"]
    assert [c["month"] for c in of(out, "sim.charges")] == ["2026-03", "2026-04", "2026-05", "2026-06"]
    assert len({c["charge_id"] for c in of(out, "sim.charges")}) == 4
    [audit] = [a for a in of(out, "sim.audit") if a["change"] == "cancelled"]
    assert (audit["status_before"], audit["status_after"]) == ("suspended", "cancelled")


def test_r11_grace_and_fee_are_configurable() -> None:
    env = {
        "STREAM_APP_GRACE_MONTHS": "1",
        "STREAM_APP_RETENTION_FEE": "800",
        "STREAM_APP_RETENTION_CURRENCY": "HKD",
    }
    out = replay([expiring_sub(), tick_line("2026-07-01T00:00:00+08:00")], env)
    assert of(out, "sim.commands", action="cancel")[0]["at"] == "2026-04-14T16:00:00Z"
    assert [(c["month"], c["amount"], c["currency"]) for c in of(out, "sim.charges")] == [
        ("2026-03", 800, "HKD"),
        ("2026-04", 800, "HKD"),
    ]


def test_r11_a_cancelled_number_gets_no_more_commands() -> None:
    out = replay(
        [
            expiring_sub(quota=1 * GB),
            tick_line("2026-07-01T00:00:00+08:00"),
            usage_line("2026-07-02T00:00:00+08:00", 2 * GB),
            balance_line("2026-07-02T01:00:00+08:00", -100),
            balance_line("2026-07-02T02:00:00+08:00", 100),
            request_line("2026-07-02T03:00:00+08:00", "resume"),
            sub_line(expires_at="2027-07-01T00:00:00+08:00", updated_at="2026-07-03T00:00:00+08:00"),
            tick_line("2026-09-01T00:00:00+08:00"),
        ]
    )
    assert commands(out)[-1] == ("cancel", "expiry", "grace_elapsed")
    assert len(commands(out)) == 2
    assert of(out, "sim.charges", month="2026-07") == []
    [refused] = of(out, "sim.alerts", kind="request_rejected")
    assert "cancelled" in refused["detail"]


def test_r11_a_new_subscription_with_a_later_valid_from_starts_a_new_life() -> None:
    out = replay(
        [
            expiring_sub(quota=1 * GB),
            tick_line("2026-07-01T00:00:00+08:00"),
            sub_line(
                quota=1 * GB, valid_from="2026-07-05T00:00:00+08:00", updated_at="2026-07-05T00:00:00+08:00"
            ),
            usage_line("2026-07-06T00:00:00+08:00", 2 * GB),
        ]
    )
    assert commands(out) == [
        ("suspend", "expiry", "expiry_time"),
        ("cancel", "expiry", "grace_elapsed"),
        ("suspend", "quota", "usage"),
    ]
    [life] = [a for a in of(out, "sim.audit") if a["change"] == "new_life"]
    assert (life["status_before"], life["status_after"]) == ("cancelled", "active")


def test_r11_expiry_at_a_month_start_charges_that_month_once() -> None:
    out = replay(
        [expiring_sub(expires_at="2026-04-01T00:00:00+08:00"), tick_line("2026-05-01T00:00:30+08:00")]
    )
    assert [c["month"] for c in of(out, "sim.charges")] == ["2026-04", "2026-05"]


def test_r11_a_subscription_arriving_already_expired_catches_up_in_time_order() -> None:
    out = replay(
        [expiring_sub(expires_at="2026-01-10T00:00:00+08:00", updated_at="2026-05-01T00:00:00+08:00")]
    )
    assert commands(out) == [("suspend", "expiry", "expiry_time"), ("cancel", "expiry", "grace_elapsed")]
    assert of(out, "sim.alerts", kind="expiry_upcoming") == []  # too late to warn
    assert of(out, "sim.alerts", kind="grace_ending") == []


# --- R12: warnings before expiry and before cancellation ----------------------------------


def test_r12_expiry_warnings_30_7_and_1_days_before_each_once() -> None:
    out = replay(
        [
            expiring_sub(expires_at="2026-05-15T00:00:00+08:00"),
            tick_line("2026-04-20T00:00:00+08:00"),
            tick_line("2026-05-20T00:00:00+08:00"),
            tick_line("2026-08-20T00:00:00+08:00"),
        ]
    )
    upcoming = of(out, "sim.alerts", kind="expiry_upcoming")
    assert [a["at"] for a in upcoming] == [
        "2026-04-14T16:00:00Z",
        "2026-05-07T16:00:00Z",
        "2026-05-13T16:00:00Z",
    ]
    assert all(a["expires_at"] == "2026-05-14T16:00:00Z" for a in upcoming)
    [grace] = of(out, "sim.alerts", kind="grace_ending")
    assert grace["cancel_at"] == "2026-08-14T16:00:00Z"
    assert grace["at"] == "2026-08-07T16:00:00Z"


def test_r12_catching_up_sends_only_the_nearest_warning_stamped_when_sent() -> None:
    out = replay(
        [expiring_sub(expires_at="2026-03-15T00:00:00+08:00", updated_at="2026-03-10T00:00:00+08:00")]
    )
    [upcoming] = of(out, "sim.alerts", kind="expiry_upcoming")
    assert upcoming["at"] == "2026-03-09T16:00:00Z"  # when the subscription arrived
    assert upcoming["detail"].endswith("expires in 5 day(s)")


def test_r12_warning_days_are_configurable() -> None:
    out = replay(
        [expiring_sub(expires_at="2026-05-15T00:00:00+08:00"), tick_line("2026-05-20T00:00:00+08:00")],
        {"STREAM_APP_EXPIRY_WARN_DAYS": "3"},
    )
    assert [a["at"] for a in of(out, "sim.alerts", kind="expiry_upcoming")] == ["2026-05-11T16:00:00Z"]


# --- R13: manual requests -------------------------------------------------------------------


def test_r13_manual_suspend_and_resume_round_trip() -> None:
    out = replay(
        [
            sub_line(),
            request_line("2026-03-10T10:00:00+08:00", "suspend", request_id="ops-1"),
            tick_line("2026-04-01T00:00:30+08:00"),  # a month start does not lift a manual stop
            request_line("2026-04-02T10:00:00+08:00", "resume", request_id="ops-2"),
        ]
    )
    assert commands(out) == [("suspend", "manual", "request"), ("restore", "manual", "request")]
    assert [c["cause"] for c in of(out, "sim.commands")] == ["ops-1", "ops-2"]


def _refusal(lines: list[bytes], action: str = "suspend") -> str:
    out = replay([*lines, request_line("2026-03-20T10:00:00+08:00", action, request_id="ops-x")])
    [alert] = of(out, "sim.alerts", kind="request_rejected")
    assert alert["cause"] == "ops-x"
    assert of(out, "sim.commands", cause="ops-x") == []
    detail: str = alert["detail"]
    assert detail.startswith(f"{action} requested by ops@example.com refused: ")
    return detail


def test_r13_manual_suspend_is_refused_in_each_forbidden_state() -> None:
    assert "already suspended (quota)" in _refusal(
        [sub_line(quota=GB), usage_line("2026-03-10T00:00:00+08:00", 2 * GB)]
    )
    assert "no subscription" in _refusal([usage_line("2026-03-10T00:00:00+08:00", 1)])
    assert "not valid" in _refusal([sub_line(valid_from="2026-04-01T00:00:00+08:00")])
    assert "already suspended (expiry)" in _refusal([expiring_sub()])
    assert "already suspended (arrears)" in _refusal(
        [sub_line(), balance_line("2026-03-11T00:00:00+08:00", -1)]
    )
    assert "reached the quota" in _refusal(
        [sub_line(quota=GB, auto_suspend=False), usage_line("2026-03-10T00:00:00+08:00", GB)]
    )
    assert "already suspended (manual)" in _refusal(
        [sub_line(), request_line("2026-03-10T00:00:00+08:00", "suspend")]
    )


def test_r13_resume_is_refused_unless_manually_suspended() -> None:
    assert "not manually suspended" in _refusal([sub_line()], "resume")
    assert "not manually suspended" in _refusal(
        [sub_line(), balance_line("2026-03-11T00:00:00+08:00", -1)], "resume"
    )


def test_r13_a_repeated_request_id_is_applied_once() -> None:
    out = replay(
        [
            sub_line(),
            request_line("2026-03-10T10:00:00+08:00", "suspend", request_id="ops-1"),
            request_line("2026-03-10T10:00:00+08:00", "suspend", request_id="ops-1"),
        ]
    )
    assert commands(out) == [("suspend", "manual", "request")]
    assert of(out, "sim.alerts", kind="request_rejected") == []


# --- combinations -----------------------------------------------------------------------


def test_expiry_and_arrears_then_renewal_then_payment() -> None:
    out = replay(
        [
            expiring_sub(),
            tick_line("2026-03-16T00:00:00+08:00"),
            balance_line("2026-03-17T00:00:00+08:00", -300),
            sub_line(expires_at="2027-03-15T00:00:00+08:00", updated_at="2026-03-18T00:00:00+08:00"),
            balance_line("2026-03-19T00:00:00+08:00", 0),
        ]
    )
    assert commands(out) == [("suspend", "expiry", "expiry_time"), ("restore", "arrears", "payment")]
    assert [(a["change"], a["reason"], a["reasons_after"]) for a in of(out, "sim.audit")] == [
        ("reason_added", "expiry", ["expiry"]),
        ("reason_added", "arrears", ["arrears", "expiry"]),
        ("reason_cleared", "expiry", ["arrears"]),
        ("reason_cleared", "arrears", []),
    ]


def test_cancel_while_over_quota_keeps_both_reasons_in_the_record() -> None:
    out = replay(
        [
            expiring_sub(quota=GB),
            usage_line("2026-03-10T00:00:00+08:00", 2 * GB),
            tick_line("2026-06-20T00:00:00+08:00"),
        ]
    )
    cancel = of(out, "sim.commands", action="cancel")
    assert [c["reasons"] for c in cancel] == [["expiry"]]  # quota was cleared on 1 April
    out2 = replay(
        [
            expiring_sub(quota=GB, expires_at="2026-03-31T00:00:00+08:00"),
            usage_line("2026-03-10T00:00:00+08:00", 2 * GB),
            tick_line("2026-03-31T12:00:00+08:00"),
        ],
        {"STREAM_APP_GRACE_MONTHS": "0"},
    )
    [cancel2] = of(out2, "sim.commands", action="cancel")
    assert cancel2["reasons"] == ["expiry", "quota"]


def test_each_sim_is_independent() -> None:
    out = replay(
        [
            sub_line(),
            sub_line(iccid=OTHER),
            balance_line("2026-03-10T00:00:00+08:00", -1, iccid=OTHER),
        ]
    )
    assert commands(out, ICCID) == []
    assert commands(out, OTHER) == [("suspend", "arrears", "balance")]
