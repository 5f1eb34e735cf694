"""R1-R9 and R14-R16 from an operator's point of view, through the pure engine (replay)."""

from __future__ import annotations

from stream_app.domain import Policy, SimState, Step, apply_usage, new_state, usage_record

from .scenario import (
    GB,
    ICCID,
    OTHER,
    line,
    of,
    replay,
    sub_line,
    t,
    tick_line,
    usage_line,
    usage_msg,
)

# --- R1: a record's month is the calendar month of its start in the billing zone ---------


def test_r1_record_starting_after_midnight_shanghai_counts_in_the_new_month() -> None:
    # 2026-03-31T16:30Z is 00:30 on 1 April in Shanghai: April's usage, not March's.
    out = replay(
        [
            sub_line(quota=1 * GB, updated_at="2026-03-31T00:00:00Z"),
            usage_line("2026-03-31T16:30:00Z", 1 * GB),
        ]
    )
    [suspend] = of(out, "sim.commands", action="suspend")
    [threshold] = of(out, "sim.alerts", kind="quota_threshold", threshold=1.0)
    assert threshold["month"] == "2026-04"
    assert suspend["cause"] is not None


def test_r1_subscription_timezone_overrides_the_billing_zone() -> None:
    # 23:30Z on 31 March is still March in Berlin (01:30 CEST on 1 April? no: UTC+2 -> 01:30).
    out = replay(
        [
            sub_line(quota=1 * GB, updated_at="2026-03-30T00:00:00Z", timezone="America/New_York"),
            usage_line("2026-04-01T02:00:00Z", 1 * GB),  # 22:00 on 31 March in New York
        ]
    )
    [threshold] = of(out, "sim.alerts", kind="quota_threshold", threshold=1.0)
    assert threshold["month"] == "2026-03"


# --- R2: a record counts once; older than the horizon goes to dead letters --------------


def test_r2_a_repeated_record_id_is_counted_once() -> None:
    record = usage_msg("2026-03-10T00:00:00+08:00", 6 * GB, record_id="cdr-1")
    out = replay(
        [
            sub_line(quota=10 * GB),
            line("sim.usage", record),
            line("sim.usage", record),
            usage_line("2026-03-10T01:00:00+08:00", 3 * GB),
        ]
    )
    # 6 + 3 = 9 GB < 10 GB: without dedupe 15 GB would have suspended the SIM.
    assert of(out, "sim.commands") == []
    [at_90] = of(out, "sim.alerts", kind="quota_threshold", threshold=0.9)
    assert at_90["used_bytes"] == 9 * GB


def test_r2_record_beyond_the_dedupe_horizon_is_dead_lettered_not_counted() -> None:
    out = replay(
        [
            sub_line(quota=1 * GB),
            usage_line("2026-03-20T00:00:00+08:00", 1000),
            # starts 8 days before now (the previous line's end)
            line(
                "sim.usage",
                {**usage_msg("2026-03-12T00:00:00+08:00", 2 * GB), "end": "2026-03-20T00:10:00+08:00"},
            ),
        ]
    )
    [letter] = of(out, "sim.deadletter")
    assert letter["error"] == "beyond_dedupe_horizon"
    assert letter["offset"] == 3
    assert of(out, "sim.commands") == []


def test_r2_horizon_is_configurable() -> None:
    lines = [
        sub_line(quota=1 * GB),
        usage_line("2026-03-20T00:00:00+08:00", 1000),
        line(
            "sim.usage",
            {**usage_msg("2026-03-18T00:00:00+08:00", 2 * GB), "end": "2026-03-20T00:10:00+08:00"},
        ),
    ]
    assert of(replay(lines), "sim.deadletter") == []
    [letter] = of(replay(lines, {"STREAM_APP_DEDUPE_HORIZON": "1d"}), "sim.deadletter")
    assert letter["error"] == "beyond_dedupe_horizon"


# --- R3: late usage counts for its own month, never suspends the current one -------------


def test_r3_late_usage_for_last_month_raises_late_usage_and_does_not_suspend() -> None:
    out = replay(
        [
            sub_line(quota=1 * GB, updated_at="2026-03-20T00:00:00+08:00"),
            usage_line("2026-03-31T20:00:00+08:00", 600_000_000),
            usage_line("2026-04-01T09:00:00+08:00", 1000),  # now in April
            # a March record arriving on 2 April: pushes March past its quota
            line(
                "sim.usage",
                {**usage_msg("2026-03-31T22:00:00+08:00", 500_000_000), "end": "2026-04-02T00:00:00+08:00"},
            ),
        ]
    )
    assert of(out, "sim.commands", action="suspend") == []
    [late] = of(out, "sim.alerts", kind="late_usage")
    assert late["month"] == "2026-03"
    assert late["used_bytes"] == 1_100_000_000


# --- R4: auto-suspend once; no auto_suspend means alerts only ----------------------------


def test_r4_auto_suspend_sim_is_suspended_once_when_it_reaches_its_quota() -> None:
    out = replay(
        [
            sub_line(quota=1 * GB),
            usage_line("2026-03-10T00:00:00+08:00", 999_999_999),
            usage_line("2026-03-10T01:00:00+08:00", 1),
            usage_line("2026-03-10T02:00:00+08:00", 5 * GB),
        ]
    )
    [suspend] = of(out, "sim.commands")
    assert suspend["action"] == "suspend"
    assert suspend["reason"] == "quota"
    assert suspend["trigger"] == "usage"
    assert suspend["reasons"] == ["quota"]
    assert suspend["iccid"] == ICCID


def test_r4_sim_without_auto_suspend_is_never_suspended_but_warned() -> None:
    out = replay(
        [
            sub_line(quota=1 * GB, auto_suspend=False),
            usage_line("2026-03-10T00:00:00+08:00", 2 * GB),
        ]
    )
    assert of(out, "sim.commands") == []
    assert [a["threshold"] for a in of(out, "sim.alerts", kind="quota_threshold")] == [0.8, 0.9, 1.0]


# --- R5: a set of reasons ---------------------------------------------------------------


def test_r5_every_change_of_reasons_is_audited_with_before_and_after() -> None:
    out = replay(
        [
            sub_line(quota=1 * GB),
            usage_line("2026-03-10T00:00:00+08:00", 2 * GB),
            tick_line("2026-04-01T00:00:30+08:00"),
        ]
    )
    audit = of(out, "sim.audit")
    assert [(a["change"], a["reasons_before"], a["reasons_after"]) for a in audit] == [
        ("reason_added", [], ["quota"]),
        ("reason_cleared", ["quota"], []),
    ]
    assert [a["status_after"] for a in audit] == ["suspended", "active"]


def test_r5_adding_a_reason_to_a_non_empty_set_only_audits() -> None:
    policy = Policy()
    state = new_state(ICCID, t("2026-03-10T00:00:00Z"), policy)
    state.reasons.add("arrears")  # another reason already holds the SIM
    from stream_app.domain import apply_subscription, subscription

    from .scenario import subscription_msg

    apply_subscription(state, subscription(subscription_msg(quota=GB)), t("2026-03-10T00:00:00Z"), policy)
    step = apply_usage(
        state, usage_record(usage_msg("2026-03-10T08:00:00+08:00", 2 * GB)), t("2026-03-10T01:00:00Z"), policy
    )
    assert [o.topic for o in step.outputs if o.topic == "commands"] == []
    [audit] = [o.value for o in step.outputs if o.topic == "audit"]
    assert audit["reasons_before"] == ["arrears"]
    assert audit["reasons_after"] == ["arrears", "quota"]
    assert state.reasons == {"arrears", "quota"}


# --- R6: month start restores, with no traffic and after missed boundaries ---------------


def test_r6_month_start_restores_a_quota_suspended_sim_without_traffic() -> None:
    out = replay(
        [
            sub_line(quota=1 * GB),
            usage_line("2026-03-10T00:00:00+08:00", 2 * GB),
            tick_line("2026-04-01T00:00:30+08:00"),
        ]
    )
    [restore] = of(out, "sim.commands", action="restore")
    assert restore["trigger"] == "month_start"
    assert restore["reason"] == "quota"
    assert restore["reasons"] == []
    assert restore["at"] == "2026-03-31T16:00:00Z"  # 00:00 on the 1st in Shanghai


def test_r6_nothing_happens_before_the_boundary() -> None:
    out = replay(
        [
            sub_line(quota=1 * GB),
            usage_line("2026-03-10T00:00:00+08:00", 2 * GB),
            tick_line("2026-03-31T23:59:59+08:00"),
        ]
    )
    assert of(out, "sim.commands", action="restore") == []


def test_r6_thresholds_re_arm_in_the_new_month() -> None:
    out = replay(
        [
            sub_line(quota=1 * GB, auto_suspend=False),
            usage_line("2026-03-10T00:00:00+08:00", 850_000_000),
            usage_line("2026-04-02T00:00:00+08:00", 850_000_000),
        ]
    )
    alerts = of(out, "sim.alerts", kind="quota_threshold", threshold=0.8)
    assert [a["month"] for a in alerts] == ["2026-03", "2026-04"]


def test_r6_missed_boundaries_give_one_restore_at_the_first_boundary() -> None:
    out = replay(
        [
            sub_line(quota=1 * GB),
            usage_line("2026-03-10T00:00:00+08:00", 2 * GB),
            tick_line("2026-06-15T00:00:00+08:00"),
        ]
    )
    [restore] = of(out, "sim.commands", action="restore")
    assert restore["at"] == "2026-03-31T16:00:00Z"


def test_r6_a_sim_already_over_quota_in_the_new_month_stays_suspended() -> None:
    # Live, a record may end up to 15 min after the worker's now: just before midnight an
    # April record is counted for April, and at midnight the SIM is not restored.
    from stream_app.domain import apply_subscription, apply_tick, subscription

    from .scenario import subscription_msg

    policy = Policy()
    now = t("2026-03-31T23:58:00+08:00")
    state = new_state(ICCID, now, policy)
    apply_subscription(state, subscription(subscription_msg(quota=GB)), now, policy)
    apply_usage(state, usage_record(usage_msg("2026-03-31T12:00:00+08:00", 2 * GB)), now, policy)
    assert state.reasons == {"quota"}
    early = apply_usage(
        state, usage_record(usage_msg("2026-04-01T00:01:00+08:00", 2 * GB, minutes=4)), now, policy
    )
    assert early.outcome == "accepted"
    assert state.months["2026-04"].used_bytes == 2 * GB
    step = apply_tick(state, t("2026-04-01T00:00:10+08:00"), policy)
    # no restore; April's own thresholds fire now that April is the current month
    assert [o.topic for o in step.outputs] == ["alerts"] * 3
    assert [o.value["month"] for o in step.outputs] == ["2026-04"] * 3
    assert state.reasons == {"quota"}
    assert state.month == "2026-04"


# --- R7: raising the quota above this month's usage clears quota -------------------------


def test_r7_add_on_pack_raising_the_quota_restores_the_sim() -> None:
    out = replay(
        [
            sub_line(quota=1 * GB),
            usage_line("2026-03-10T00:00:00+08:00", 1 * GB),
            sub_line(quota=5 * GB, updated_at="2026-03-10T12:00:00+08:00"),
        ]
    )
    [restore] = of(out, "sim.commands", action="restore")
    assert restore["trigger"] == "quota_raised"
    assert restore["cause"].startswith("subscription:")


def test_r7_a_raise_still_below_usage_keeps_the_sim_suspended() -> None:
    out = replay(
        [
            sub_line(quota=1 * GB),
            usage_line("2026-03-10T00:00:00+08:00", 3 * GB),
            sub_line(quota=2 * GB, updated_at="2026-03-10T12:00:00+08:00"),
        ]
    )
    assert of(out, "sim.commands", action="restore") == []


def test_r7_an_older_subscription_does_not_replace_a_newer_one() -> None:
    out = replay(
        [
            sub_line(quota=5 * GB, updated_at="2026-03-02T00:00:00+08:00"),
            sub_line(quota=1 * GB, updated_at="2026-03-01T00:00:00+08:00"),
            usage_line("2026-03-10T00:00:00+08:00", 2 * GB),
        ]
    )
    assert of(out, "sim.commands") == []


# --- R8: one alert per SIM, month and threshold, ascending --------------------------------


def test_r8_one_record_crossing_several_thresholds_alerts_in_ascending_order_once() -> None:
    out = replay(
        [
            sub_line(quota=1 * GB, auto_suspend=False),
            usage_line("2026-03-10T00:00:00+08:00", 950_000_000),
            usage_line("2026-03-10T01:00:00+08:00", 10_000_000),
            usage_line("2026-03-10T02:00:00+08:00", 100_000_000),
        ]
    )
    alerts = of(out, "sim.alerts", kind="quota_threshold")
    assert [a["threshold"] for a in alerts] == [0.8, 0.9, 1.0]
    assert len({a["alert_id"] for a in alerts}) == 3


def test_r8_subscription_and_worker_thresholds_are_used() -> None:
    custom = replay(
        [
            sub_line(quota=100, auto_suspend=False, warn_at=[0.5]),
            usage_line("2026-03-10T00:00:00+08:00", 60),
        ]
    )
    assert [a["threshold"] for a in of(custom, "sim.alerts", kind="quota_threshold")] == [0.5]
    worker = replay(
        [
            sub_line(quota=100, auto_suspend=False),
            usage_line("2026-03-10T00:00:00+08:00", 60),
        ],
        {"STREAM_APP_WARN_AT": "0.25,0.5"},
    )
    assert [a["threshold"] for a in of(worker, "sim.alerts", kind="quota_threshold")] == [0.25, 0.5]


# --- R9: forecast ------------------------------------------------------------------------


def test_r9_forecast_warns_once_with_the_projected_exhaustion_time() -> None:
    # 10 days into March, 5 GB of 10 GB: the average rate exhausts it in 10 more days.
    # With a 72 h horizon nothing fires; on day 25 with 9 GB used, 1 GB left at
    # 0.36 GB/day projects 2.8 days, before the month ends: one forecast.
    out = replay(
        [
            sub_line(quota=10 * GB, auto_suspend=False),
            usage_line("2026-03-10T23:50:00+08:00", 5 * GB),
            usage_line("2026-03-25T23:50:00+08:00", 4 * GB),
            usage_line("2026-03-26T00:00:00+08:00", 1000),
        ]
    )
    [forecast] = of(out, "sim.alerts", kind="quota_forecast")
    assert forecast["month"] == "2026-03"
    assert forecast["used_bytes"] == 9 * GB
    exhaustion = t(forecast["exhaustion_at"])
    assert t("2026-03-28T00:00:00+08:00") < exhaustion < t("2026-03-29T00:00:00+08:00")


def test_r9_no_forecast_when_exhaustion_falls_after_the_month_end() -> None:
    out = replay(
        [
            sub_line(quota=10 * GB, auto_suspend=False),
            usage_line("2026-03-29T23:50:00+08:00", 8 * GB),  # 2 GB left at ~0.28 GB/day: ~7 days
        ]
    )
    assert of(out, "sim.alerts", kind="quota_forecast") == []


# --- R14: unknown SIMs ---------------------------------------------------------------------


def test_r14_usage_without_subscription_is_counted_and_flagged_once_per_month() -> None:
    out = replay(
        [
            usage_line("2026-03-10T00:00:00+08:00", 600_000_000, iccid=OTHER),
            usage_line("2026-03-11T00:00:00+08:00", 600_000_000, iccid=OTHER),
            usage_line("2026-04-02T00:00:00+08:00", 1, iccid=OTHER),
            sub_line(iccid=OTHER, quota=1 * GB, updated_at="2026-04-02T01:00:00+08:00"),
        ]
    )
    unknown = of(out, "sim.alerts", kind="unknown_sim")
    assert [a["month"] for a in unknown] == ["2026-03", "2026-04"]
    assert of(out, "sim.commands") == []  # April's usage is 1 byte


def test_r14_subscription_arrival_evaluates_the_counted_usage_at_once() -> None:
    out = replay(
        [
            usage_line("2026-03-10T00:00:00+08:00", 2 * GB, iccid=OTHER),
            sub_line(iccid=OTHER, quota=1 * GB, updated_at="2026-03-10T01:00:00+08:00"),
        ]
    )
    [suspend] = of(out, "sim.commands", action="suspend")
    assert suspend["iccid"] == OTHER
    assert suspend["cause"].startswith("subscription:")
    assert len(of(out, "sim.alerts", kind="quota_threshold")) == 3


# --- R15: bad input ------------------------------------------------------------------------


def test_r15_bad_lines_become_dead_letters_with_line_numbers_and_replay_goes_on() -> None:
    bad_iccid = usage_msg("2026-03-10T00:00:00+08:00", 1)
    bad_iccid["iccid"] = "12345"
    negative = usage_msg("2026-03-10T00:00:00+08:00", 1)
    negative["bytes_up"] = -5
    backwards = {**usage_msg("2026-03-10T00:00:00+08:00", 1), "end": "2026-03-09T00:00:00+08:00"}
    missing = usage_msg("2026-03-10T00:00:00+08:00", 1)
    del missing["carrier"]
    naive = {**usage_msg("2026-03-10T00:00:00+08:00", 1), "start": "2026-03-10T00:00:00"}
    out = replay(
        [
            sub_line(quota=1 * GB),  # 1
            b"{not json",  # 2
            line("sim.usage", bad_iccid),  # 3
            line("sim.usage", negative),  # 4
            line("sim.usage", backwards),  # 5
            line("sim.usage", missing),  # 6
            usage_line("2026-03-09T23:00:00+08:00", 1),  # 7 (now = 23:10)
            b'{"topic": "sim.usage", "value": {"iccid": 5}}',  # 8
            line("sim.nope", {}),  # 9
            line("sim.usage", {**naive}),  # 10
            usage_line("2026-03-10T00:00:00+08:00", 2 * GB),  # 11: valid, still processed
        ]
    )
    letters = {d["offset"]: d["error"] for d in of(out, "sim.deadletter")}
    assert letters == {
        2: "invalid_json",
        3: "bad_iccid",
        4: "negative_bytes",
        5: "end_before_start",
        6: "missing_field",
        8: "bad_iccid",
        9: "unknown_topic",
        10: "bad_time",
    }
    assert len(of(out, "sim.commands", action="suspend")) == 1


def test_r15_live_record_ending_more_than_15_minutes_after_now_is_rejected() -> None:
    # (In replay now advances to each record's end, so this only happens live.)
    policy = Policy()
    now = t("2026-03-10T00:00:00+08:00")
    state = new_state(ICCID, now, policy)
    ok = usage_record(usage_msg("2026-03-09T23:55:00+08:00", 1, minutes=20))
    late = usage_record(usage_msg("2026-03-09T23:55:00+08:00", 1, minutes=21))
    assert apply_usage(state, ok, now, policy).rejection is None
    step = apply_usage(state, late, now, policy)
    assert step.rejection is not None and step.rejection.error == "end_in_future"
    assert state.months["2026-03"].used_bytes == 1


def test_r15_oversized_messages_are_refused_before_parsing() -> None:
    big = usage_msg("2026-03-10T00:00:00+08:00", 1)
    big["padding"] = "x" * 70_000
    out = replay([line("sim.usage", big)])
    [letter] = of(out, "sim.deadletter")
    assert letter["error"] == "too_large"


def test_r15_dead_letter_keeps_the_original_bytes() -> None:
    import base64

    out = replay([b"garbage \xff"])
    [letter] = of(out, "sim.deadletter")
    assert base64.b64decode(letter["payload_b64"]) == b"garbage \xff"


# --- R16: deterministic ------------------------------------------------------------------


def test_r16_same_inputs_same_outputs_ids_included() -> None:
    lines = [
        sub_line(quota=1 * GB),
        usage_line("2026-03-10T00:00:00+08:00", 2 * GB, record_id="a"),
        tick_line("2026-04-01T00:00:30+08:00"),
    ]
    assert replay(lines) == replay(lines)


def test_r16_reprocessing_a_record_on_the_stored_state_gives_the_same_output_ids() -> None:
    # A crash after sending but before the offset commit reprocesses the record on the
    # state stored before it (the changelog may not have it either): same ids.
    from stream_app import codec
    from stream_app.domain import apply_subscription, subscription

    from .scenario import subscription_msg

    policy = Policy()
    now = t("2026-03-10T01:00:00Z")
    state = new_state(ICCID, now, policy)
    apply_subscription(state, subscription(subscription_msg(quota=GB)), now, policy)
    table = dict(codec.sim_entries(codec.stored_of(state, policy)))

    def stored() -> SimState:
        loaded = codec.load_sim(ICCID, table.get, policy)
        assert loaded is not None
        return loaded.state()

    record = usage_record(usage_msg("2026-03-10T08:00:00+08:00", 2 * GB))
    first = apply_usage(stored(), record, now, policy)
    again = apply_usage(stored(), record, t("2026-03-10T01:00:05Z"), policy)

    def ids(step: Step) -> list[str]:
        return [
            o.value.get("command_id") or o.value.get("alert_id") or o.value["audit_id"] for o in step.outputs
        ]

    assert ids(first) == ids(again)
    assert len(ids(first)) == 5
    # and once the state was stored, the record is recognised as a duplicate
    assert apply_usage(first.state, record, now, policy).outcome == "duplicate"


def test_r15_an_invalid_line_does_not_move_replay_time() -> None:
    # A garbage record claiming to end in 2099 must not make every later record "old".
    garbage = {**usage_msg("2099-01-01T00:00:00Z", 1), "iccid": "not-an-iccid"}
    out = replay(
        [
            sub_line(quota=1 * GB),
            line("sim.usage", garbage),
            usage_line("2026-03-10T00:00:00+08:00", 2 * GB),
        ]
    )
    assert [d["error"] for d in of(out, "sim.deadletter")] == ["bad_iccid"]
    assert len(of(out, "sim.commands", action="suspend")) == 1


def test_r15_replay_dead_letters_carry_the_original_line() -> None:
    import base64

    raw = b'{"topic": "sim.usage", "value": {"record_id": "x", "bytes_up": 1e3}}'
    [letter] = of(replay([raw]), "sim.deadletter")
    assert base64.b64decode(letter["payload_b64"]) == raw
    assert letter["topic"] == "sim.usage"
