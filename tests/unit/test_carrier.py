"""The simulated carrier behind `stream-app provision`, driven by plain datetimes."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from stream_app.domain import CarrierStatus, CommandResult, carrier_status, command_result
from stream_app.domain.timeutil import parse_time
from stream_app.tools.carrier import BadCommand, CarrierOptions, Command, Message, Refusal, SimulatedCarrier

ICCID = "89860012345678901234"
OTHER = "898602B9201650109563"
T0 = parse_time("2026-03-10T08:00:00Z")
SECOND = timedelta(seconds=1)
# Nothing random unless a test asks for it: no refusals, no jitter, no inventory.
PLAIN = CarrierOptions(
    latency=2 * SECOND,
    jitter=timedelta(0),
    fail_rate=0.0,
    reject_rate=0.0,
    inventory_interval=None,
)
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def command(action: str, iccid: str = ICCID, attempt: int = 1, n: int = 0, **extra: Any) -> Command:
    return Command(f"{action}-{iccid}-{n}", iccid, action, attempt, **extra)


def results(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.value for m in messages if m.topic == "command_results"]


def inventory(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.value for m in messages if m.topic == "inventory"]


def answer(carrier: SimulatedCarrier, cmd: Command, at: datetime) -> dict[str, Any]:
    """Send one call at ``at`` and return its result, once due."""
    due = carrier.receive(cmd, at)
    [result] = results(carrier.step(due))
    return result


def test_a_call_is_answered_after_the_latency_and_not_before() -> None:
    carrier = SimulatedCarrier(PLAIN, T0)
    due = carrier.receive(command("suspend"), T0, tag=("commands", 7))
    assert due == T0 + 2 * SECOND
    assert carrier.step(due - timedelta(milliseconds=1)) == []
    [message] = carrier.step(due + 5 * SECOND)
    assert (message.topic, message.iccid, message.tag) == ("command_results", ICCID, ("commands", 7))
    value = message.value
    assert value["outcome"] == "applied" and value["carrier_status"] == "suspended"
    assert value["at"] == "2026-03-10T08:00:02Z"  # when the carrier answered, not when asked
    assert value["throttled"] is False and value["detail"] == "suspended"
    assert carrier.step(due + 10 * SECOND) == []


def test_jitter_spreads_answers_within_the_range_and_the_seed_decides() -> None:
    options = replace(PLAIN, latency=SECOND, jitter=4 * SECOND)
    dues = [SimulatedCarrier(options, T0).receive(command("suspend", n=n), T0) for n in range(200)]
    delays = [(d - T0).total_seconds() for d in dues]
    assert all(1 <= d < 5 for d in delays)
    assert max(delays) - min(delays) > 3  # spread over the range, not a constant
    again = [SimulatedCarrier(options, T0).receive(command("suspend", n=n), T0) for n in range(200)]
    other_seed = replace(options, seed=2)
    other = [SimulatedCarrier(other_seed, T0).receive(command("suspend", n=n), T0) for n in range(200)]
    assert dues == again and dues != other


def _outcomes(options: CarrierOptions, count: int = 2000) -> list[str]:
    carrier = SimulatedCarrier(options, T0)
    for n in range(count):  # one call per card: no repeat window in the way
        carrier.receive(command("suspend", iccid=f"8986{n:016d}"), T0)
    return [r["outcome"] for r in results(carrier.step(T0 + timedelta(minutes=1)))]


def test_refusal_rates_give_their_shares_the_same_for_the_same_seed() -> None:
    options = replace(PLAIN, fail_rate=0.2, reject_rate=0.05)
    outcomes = _outcomes(options)
    assert 0.17 < outcomes.count("failed") / len(outcomes) < 0.23
    assert 0.03 < outcomes.count("rejected") / len(outcomes) < 0.07
    assert outcomes == _outcomes(options)
    assert outcomes != _outcomes(replace(options, seed=99))
    assert set(_outcomes(PLAIN)) == {"applied"}


def test_a_refused_call_says_why_and_reports_no_status() -> None:
    carrier = SimulatedCarrier(replace(PLAIN, fail_rate=1.0), T0)
    result = answer(carrier, command("suspend"), T0)
    assert result["outcome"] == "failed"
    assert "busy" in result["detail"]
    assert "carrier_status" not in result and "throttled" not in result
    assert carrier.cards[ICCID].status == "active"  # nothing changed


def test_a_second_status_change_within_the_repeat_window_fails_until_it_ends() -> None:
    carrier = SimulatedCarrier(PLAIN, T0)  # the default window: 3 minutes
    assert answer(carrier, command("suspend"), T0)["outcome"] == "applied"  # changed at 08:00:02
    early = answer(carrier, command("restore"), T0 + timedelta(minutes=1))
    assert early["outcome"] == "failed"
    assert "within 3 min" in early["detail"] and "allowed again from 2026-03-10T08:03:02Z" in early["detail"]
    assert carrier.cards[ICCID].status == "suspended"
    # asking for the status the card already has changes nothing: no window
    assert (
        answer(carrier, command("suspend", n=1), T0 + timedelta(minutes=1))["detail"] == "already suspended"
    )
    # throttling is not a status change
    throttle = command("throttle", speed_kbps=128)
    assert answer(carrier, throttle, T0 + timedelta(minutes=1))["outcome"] == "applied"
    late = answer(carrier, command("restore", attempt=2), T0 + timedelta(minutes=3))
    assert (late["outcome"], late["carrier_status"]) == ("applied", "active")
    other_card = answer(carrier, command("suspend", iccid=OTHER), T0 + timedelta(minutes=3))
    assert other_card["outcome"] == "applied"  # the window is per card


def test_no_repeat_window_when_it_is_zero() -> None:
    carrier = SimulatedCarrier(replace(PLAIN, repeat_window=timedelta(0)), T0)
    assert answer(carrier, command("suspend"), T0)["outcome"] == "applied"
    assert answer(carrier, command("restore"), T0 + SECOND)["outcome"] == "applied"


def test_a_cancelled_number_is_never_reactivated_suspended_or_throttled() -> None:
    carrier = SimulatedCarrier(replace(PLAIN, repeat_window=timedelta(0)), T0)
    assert answer(carrier, command("cancel"), T0)["carrier_status"] == "cancelled"
    later = T0 + timedelta(hours=1)
    for action in ("restore", "suspend", "throttle", "unthrottle"):
        result = answer(carrier, command(action, speed_kbps=64), later)
        assert result["outcome"] == "rejected", action
        assert "cancelled" in result["detail"]
    assert answer(carrier, command("cancel", n=1), later)["detail"] == "already cancelled"
    assert carrier.cards[ICCID].status == "cancelled"


def test_throttle_and_unthrottle_set_the_flag_the_results_report() -> None:
    carrier = SimulatedCarrier(PLAIN, T0)
    throttled = answer(carrier, command("throttle", speed_kbps=256), T0)
    assert (throttled["throttled"], throttled["carrier_status"]) == (True, "active")
    assert throttled["detail"] == "throttled to 256 kbps"
    assert (
        answer(carrier, command("throttle", n=1, speed_kbps=256), T0)["detail"]
        == "already throttled to 256 kbps"
    )
    assert answer(carrier, command("throttle", n=2), T0)["outcome"] == "rejected"  # no speed
    assert answer(carrier, command("unthrottle"), T0)["throttled"] is False
    assert answer(carrier, command("unthrottle", n=1), T0)["detail"] == "already not throttled"


def test_unknown_actions_are_rejected_and_unreadable_commands_refused() -> None:
    carrier = SimulatedCarrier(PLAIN, T0)
    result = answer(carrier, command("reboot"), T0)
    assert (result["outcome"], result["detail"]) == ("rejected", "unknown action 'reboot'")
    value = {"command_id": "c1", "iccid": ICCID.lower(), "action": "suspend", "attempt": 3}
    assert Command.parse(value) == Command("c1", ICCID, "suspend", 3)  # upper case, as keyed
    bad_ones: list[object] = [
        [],
        {"iccid": ICCID},
        {"command_id": "c1", "iccid": "12"},
        {**value, "attempt": 0},
    ]
    for bad in bad_ones:
        with pytest.raises(BadCommand):
            Command.parse(bad)


def test_a_resend_is_applied_again_and_reported_with_a_new_result_id() -> None:
    carrier = SimulatedCarrier(PLAIN, T0)
    first = answer(carrier, command("suspend"), T0)
    resend = answer(carrier, command("suspend", attempt=2), T0 + timedelta(minutes=1))
    assert resend["outcome"] == "applied" and resend["detail"] == "already suspended"
    assert resend["command_id"] == first["command_id"]
    assert resend["result_id"] != first["result_id"]
    # the same attempt answered twice (a redelivery) is the same result: counted once
    again = answer(SimulatedCarrier(PLAIN, T0), command("suspend"), T0)
    assert again["result_id"] == first["result_id"]


def test_each_attempt_meets_its_own_chance() -> None:
    options = replace(PLAIN, fail_rate=0.5, repeat_window=timedelta(0))
    carrier = SimulatedCarrier(options, T0)
    outcomes = [answer(carrier, command("suspend", attempt=n), T0)["outcome"] for n in range(1, 41)]
    assert {"applied", "failed"} == set(outcomes)


def test_refused_cards_are_refused_the_given_number_of_times() -> None:
    _, once = Refusal.parse(f"{ICCID.lower()}:failed:1")
    options = replace(PLAIN, refusals={ICCID: once, OTHER: Refusal("rejected")})
    carrier = SimulatedCarrier(options, T0)
    first = answer(carrier, command("suspend"), T0)
    assert (first["outcome"], first["detail"]) == (
        "failed",
        "suspend refused for this card (simulated: --refuse)",
    )
    assert answer(carrier, command("suspend", attempt=2), T0)["outcome"] == "applied"
    assert [answer(carrier, command("suspend", OTHER, attempt=n), T0)["outcome"] for n in (1, 2, 3)] == [
        "rejected"
    ] * 3
    for text in ("8986:failed", f"{ICCID}:applied", f"{ICCID}:failed:0", ICCID):
        with pytest.raises(ValueError):
            Refusal.parse(text)


def test_a_rate_limit_makes_calls_wait_their_turn() -> None:
    carrier = SimulatedCarrier(replace(PLAIN, calls_per_second=4), T0)
    dues = [carrier.receive(command("suspend", iccid=f"8986{n:016d}"), T0) for n in range(6)]
    assert [(d - T0).total_seconds() for d in dues] == [2, 2.25, 2.5, 2.75, 3, 3.25]
    assert carrier.receive(command("restore"), T0 + timedelta(minutes=1)) == T0 + timedelta(
        minutes=1, seconds=2
    )


def test_inventory_reports_every_known_card_each_interval_with_unique_ids() -> None:
    options = replace(PLAIN, inventory_interval=timedelta(minutes=1))
    carrier = SimulatedCarrier(options, T0)
    carrier.receive(command("suspend"), T0)
    carrier.receive(command("restore", iccid=OTHER), T0)
    first = carrier.step(T0 + timedelta(minutes=1))
    assert [m.topic for m in first] == ["command_results", "command_results", "inventory", "inventory"]
    assert [(v["iccid"], v["status"], v["at"]) for v in inventory(first)] == [
        (ICCID, "suspended", "2026-03-10T08:01:00Z"),
        (OTHER, "active", "2026-03-10T08:01:00Z"),
    ]
    assert [m.iccid for m in first if m.topic == "inventory"] == [ICCID, OTHER]
    assert carrier.step(T0 + timedelta(seconds=119)) == []
    # a stalled caller gets one round, at its time, not one per interval missed
    late = inventory(carrier.step(T0 + timedelta(minutes=5, seconds=30)))
    assert [v["at"] for v in late] == ["2026-03-10T08:02:00Z"] * 2
    assert carrier.next_due() == T0 + timedelta(minutes=6)
    ids = [v["event_id"] for v in inventory(first) + late]
    assert len(set(ids)) == len(ids)


def test_drift_flips_idle_cards_and_the_inventory_shows_it() -> None:
    options = replace(PLAIN, inventory_interval=timedelta(minutes=1), drift_rate=1.0)
    carrier = SimulatedCarrier(options, T0)
    carrier.receive(command("suspend"), T0)
    carrier.receive(command("cancel", iccid=OTHER), T0)
    carrier.step(T0 + 10 * SECOND)
    busy = "89860000000000000001"
    carrier.receive(command("suspend", iccid=busy), T0 + timedelta(seconds=59))  # in flight at the round
    messages = carrier.step(T0 + timedelta(minutes=1))
    statuses = {v["iccid"]: v["status"] for v in inventory(messages)}
    assert statuses == {ICCID: "active", OTHER: "cancelled", busy: "active"}
    assert [m.note for m in messages if m.note and m.topic == "inventory"] == [
        f"drift: {ICCID} reactivated itself (suspended -> active)"
    ]
    assert carrier.counts["drift"] == 1


def test_drift_is_rare_at_a_low_rate_and_never_without_one() -> None:
    def drifts(rate: float) -> int:
        options = replace(PLAIN, inventory_interval=timedelta(minutes=1), drift_rate=rate)
        carrier = SimulatedCarrier(options, T0)
        for n in range(500):
            carrier.receive(command("suspend", iccid=f"8986{n:016d}"), T0)
        carrier.step(T0 + timedelta(minutes=1))
        return carrier.counts["drift"]

    assert drifts(0.0) == 0
    assert 10 < drifts(0.05) < 40


def test_a_drift_card_drifts_once_after_a_command_changed_it() -> None:
    options = replace(PLAIN, inventory_interval=timedelta(minutes=1), drift_cards=frozenset({ICCID}))
    carrier = SimulatedCarrier(options, T0)
    carrier.receive(command("suspend", iccid=OTHER), T0)  # known, never changed: no drift
    carrier.receive(command("restore"), T0)  # already active: no change yet
    assert {v["status"] for v in inventory(carrier.step(T0 + timedelta(minutes=1)))} == {
        "active",
        "suspended",
    }
    carrier.receive(command("suspend"), T0 + timedelta(minutes=1))
    statuses = [
        {v["iccid"]: v["status"] for v in inventory(carrier.step(T0 + timedelta(minutes=n)))}[ICCID]
        for n in (2, 3, 4)
    ]
    assert statuses == ["active", "active", "active"]  # the suspension did not stick, once
    reconcile = answer(carrier, command("suspend", n=9), T0 + timedelta(minutes=5))
    assert reconcile["carrier_status"] == "suspended"
    assert {v["iccid"]: v["status"] for v in inventory(carrier.step(T0 + timedelta(minutes=7)))}[ICCID] == (
        "suspended"
    )


def test_results_and_inventory_are_what_the_worker_accepts() -> None:
    options = replace(PLAIN, inventory_interval=timedelta(minutes=1), fail_rate=0.3, reject_rate=0.1)
    carrier = SimulatedCarrier(options, T0)
    for n, action in enumerate(("suspend", "restore", "throttle", "unthrottle", "cancel", "reboot")):
        iccid = OTHER.lower() if n % 2 else ICCID  # as a sender might spell it
        value = {"command_id": f"c{n}", "iccid": iccid, "action": action, "attempt": 1, "speed_kbps": 64}
        carrier.receive(Command.parse(value), T0)
    messages = carrier.step(T0 + timedelta(minutes=1))
    assert len(results(messages)) == 6 and len(inventory(messages)) == 2
    checks: dict[str, tuple[str, Callable[[dict[str, Any]], CommandResult | CarrierStatus]]] = {
        "command_results": ("command_result", command_result),
        "inventory": ("carrier_status", carrier_status),
    }
    for message in messages:
        name, parse = checks[message.topic]
        schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        assert list(validator.iter_errors(message.value)) == []
        assert parse(message.value).iccid == message.iccid == message.value["iccid"]  # the Kafka key


def test_options_are_checked() -> None:
    bad: dict[str, Any]
    for bad in (
        {"fail_rate": 1.5},
        {"fail_rate": 0.6, "reject_rate": 0.6},
        {"latency": -SECOND},
        {"calls_per_second": 0.0},
        {"inventory_interval": timedelta(0)},
    ):
        with pytest.raises(ValueError):
            CarrierOptions(**bad)
