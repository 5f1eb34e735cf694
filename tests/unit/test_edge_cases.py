"""Edge cases a review found: each was a real defect before its fix."""

from __future__ import annotations

import base64
import hashlib

import pytest

from stream_app.domain import (
    InvalidInput,
    Policy,
    apply_request,
    apply_tick,
    apply_usage,
    manual_request,
    new_state,
    usage_record,
)
from stream_app.domain.outputs import MAX_DEAD_LETTER_PAYLOAD, dead_letter
from stream_app.pipeline import parse

from .scenario import (
    ICCID,
    commands,
    expiring,
    line,
    of,
    replay,
    sub_line,
    t,
    tick_line,
    usage_line,
    usage_msg,
)


def test_early_usage_of_the_new_month_gets_its_threshold_alerts_at_midnight() -> None:
    # counted just before midnight (start within the skew), evaluated when April starts
    policy = Policy()
    state = new_state(ICCID, t("2026-03-31T23:55:00+08:00"), policy)
    from stream_app.domain import apply_subscription, subscription

    from .scenario import subscription_msg

    now = t("2026-03-31T23:55:00+08:00")
    apply_subscription(state, subscription(subscription_msg(quota=1000, auto_suspend=False)), now, policy)
    early = usage_record(usage_msg("2026-04-01T00:01:00+08:00", 2000, minutes=4))
    assert apply_usage(state, early, now, policy).outputs == []
    step = apply_tick(state, t("2026-04-01T00:00:05+08:00"), policy)
    assert [o.value["threshold"] for o in step.outputs] == [0.8, 0.9, 1.0]


def test_numbers_beyond_2_to_the_53_are_refused_not_crashing() -> None:
    for value in (10**19, 1e20, -(2**60)):
        with pytest.raises(InvalidInput) as caught:
            usage_record({**usage_msg("2026-03-10T00:00:00+08:00", 1), "bytes_up": value})
        assert caught.value.code in ("wrong_type", "negative_bytes")
    out = replay([usage_line("2026-03-10T00:00:00+08:00", 1).replace(b'"bytes_up":0', b'"bytes_up":1e20')])
    assert [d["error"] for d in of(out, "sim.deadletter")] == ["wrong_type"]


def test_times_outside_1970_to_9000_are_bad_time() -> None:
    out = replay([sub_line(expires_at="0001-01-10T00:00:00Z"), tick_line("2026-05-01T00:00:00Z")])
    assert [d["error"] for d in of(out, "sim.deadletter")] == ["bad_time"]


def test_a_huge_payload_gives_a_dead_letter_that_still_fits_in_kafka() -> None:
    payload = b"x" * 900_000
    letter = dead_letter("sim.usage", 3, 17, "too_large", "too big", payload, key=ICCID).value
    assert len(base64.b64decode(letter["payload_b64"])) == MAX_DEAD_LETTER_PAYLOAD
    assert letter["payload_bytes"] == 900_000
    assert letter["payload_sha256"] == hashlib.sha256(payload).hexdigest()


def test_the_kafka_key_must_be_the_normalised_iccid_exactly() -> None:
    raw = line("sim.usage", usage_msg("2026-03-10T00:00:00+08:00", 1, iccid="898602B9201650109563"))
    value = raw[raw.index(b'"value":') + 8 : -1]
    assert parse("usage", value, 65536, key=b"898602B9201650109563").iccid == "898602B9201650109563"
    for key in (b"898602b9201650109563", b""):
        with pytest.raises(InvalidInput) as caught:
            parse("usage", value, 65536, key=key)
        assert caught.value.code == "key_mismatch"


def test_an_old_request_redelivered_is_still_recognised() -> None:
    policy = Policy()
    now = t("2026-03-30T00:00:00+08:00")
    state = new_state(ICCID, now, policy)
    from stream_app.domain import apply_subscription, subscription

    from .scenario import subscription_msg

    apply_subscription(state, subscription(subscription_msg()), now, policy)
    old = manual_request(
        {
            "request_id": "q1",
            "iccid": ICCID,
            "action": "suspend",
            "at": "2026-03-11T00:00:00+08:00",
            "requested_by": "ops",
        }
    )
    assert apply_request(state, old, now, policy).outcome == "accepted"
    assert apply_request(state, old, t("2026-03-30T00:05:00+08:00"), policy).outcome == "duplicate"


def test_billing_and_requests_dated_in_the_future_are_refused() -> None:
    out = replay(
        [
            sub_line(),
            usage_line("2026-03-10T00:00:00+08:00", 1),
            # a balance event claiming 2036 would otherwise lock arrears for ten years
            line(
                "sim.billing",
                {
                    "event_id": "b",
                    "iccid": ICCID,
                    "at": "2036-01-01T00:00:00Z",
                    "balance": -5,
                    "currency": "CNY",
                },
            ),
        ]
    )
    # in replay now moves to the event's time, so it is accepted there; live it is not:
    assert commands(out) == [("suspend", "arrears", "balance")]
    policy = Policy()
    from stream_app.domain import apply_balance, balance_event

    state = new_state(ICCID, t("2026-03-10T00:00:00Z"), policy)
    future = balance_event(
        {"event_id": "b", "iccid": ICCID, "at": "2036-01-01T00:00:00Z", "balance": -5, "currency": "CNY"}
    )
    step = apply_balance(state, future, t("2026-03-10T00:00:00Z"), policy)
    assert step.rejection is not None and step.rejection.error == "at_in_future"
    request = manual_request(
        {
            "request_id": "q",
            "iccid": ICCID,
            "action": "suspend",
            "at": "2036-01-01T00:00:00Z",
            "requested_by": "ops",
        }
    )
    step = apply_request(state, request, t("2026-03-10T00:00:00Z"), policy)
    assert step.rejection is not None and step.rejection.error == "at_in_future"


def test_an_expiry_learned_late_charges_every_month_started_since() -> None:
    out = replay([expiring(expires_at="2026-01-15T00:00:00+08:00", updated_at="2026-03-20T00:00:00+08:00")])
    assert [c["month"] for c in of(out, "sim.charges")] == ["2026-01", "2026-02", "2026-03"]
    assert len({c["charge_id"] for c in of(out, "sim.charges")}) == 3


def test_monthly_renewals_do_not_accumulate_occasions_in_the_state() -> None:
    from stream_app.domain import apply_subscription, subscription

    from .scenario import subscription_msg

    policy = Policy()
    now = t("2026-01-01T00:00:00+08:00")
    state = new_state(ICCID, now, policy)
    for month in range(1, 37):
        year, mon = 2026 + (month - 1) // 12, (month - 1) % 12 + 1
        now = t(f"{year}-{mon:02d}-20T00:00:00+08:00")
        expires = f"{year + (mon == 12)}-{mon % 12 + 1:02d}-25T00:00:00+08:00"
        apply_subscription(
            state,
            subscription(
                subscription_msg(expires_at=expires, updated_at=f"{year}-{mon:02d}-20T00:00:00+08:00")
            ),
            now,
            policy,
        )
        apply_tick(state, now, policy)
    assert len(state.fired) <= 4
