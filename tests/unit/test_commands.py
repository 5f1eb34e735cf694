"""R24-R27 from an operator's point of view: command results, resends, supersession and
drift repair, through the pure engine (replay), plus properties over random results."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.domain import Policy, apply_subscription, apply_usage, new_state, subscription, usage_record
from stream_app.domain.describe import describe
from stream_app.domain.outputs import derive_id
from stream_app.domain.timeutil import format_time
from stream_app.settings import Settings
from stream_app.tools.replay import Replayer

from .scenario import GB, ICCID, line, of, replay, sub_line, t, tick_line, usage_line, usage_msg

TRACKING = {"STREAM_APP_COMMAND_ACK_TIMEOUT": "10m"}
OVER = "2026-03-10T08:00:00+08:00"  # the record that suspends, ending 10 minutes later
SENT = t("2026-03-10T08:10:00+08:00")


def _suspension(record_id: str = "cdr-1") -> list[bytes]:
    return [
        sub_line(quota=GB, updated_at="2026-03-01T00:00:00+08:00"),
        usage_line(OVER, 2 * GB, record_id=record_id),
    ]


def _suspend_id(record_id: str = "cdr-1") -> str:
    return derive_id("command", ICCID, "suspend", "quota", "usage", record_id, "2026-03")


def result_line(
    outcome: str, at: str, command_id: str | None = None, result_id: str | None = None, **extra: Any
) -> bytes:
    value = {
        "result_id": result_id or f"res-{outcome}-{at}",
        "command_id": command_id or _suspend_id(),
        "iccid": ICCID,
        "outcome": outcome,
        "at": at,
        **extra,
    }
    return line("sim.command-results", value)


def inventory_line(status: str, at: str, event_id: str | None = None, **extra: Any) -> bytes:
    value = {
        "event_id": event_id or f"inv-{status}-{at}",
        "iccid": ICCID,
        "status": status,
        "at": at,
        **extra,
    }
    return line("sim.inventory", value)


def sends(out: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    """(action, attempt, command_id) of the SIM's command sends, in order."""
    return [
        (o["value"]["action"], o["value"]["attempt"], o["value"]["command_id"])
        for o in out
        if o["topic"] == "sim.commands"
    ]


def at(minutes: float) -> str:
    return format_time(SENT + timedelta(minutes=minutes))


# --- R24: pending until applied; resends; command_failed -------------------------------


def test_r24_a_command_applied_at_the_first_send_is_not_sent_again() -> None:
    out = replay([*_suspension(), result_line("applied", at(1)), tick_line(at(300))], TRACKING)
    assert [(a, n) for a, n, _ in sends(out)] == [("suspend", 1)]
    assert of(out, "sim.alerts", kind="command_failed") == []


def test_r24_a_failed_send_goes_again_after_a_minute_with_the_same_id() -> None:
    out = replay(
        [*_suspension(), result_line("failed", at(2)), tick_line(at(2.5)), tick_line(at(3.5))],
        TRACKING,
    )
    first, second = of(out, "sim.commands")
    assert second["command_id"] == first["command_id"] and (first["attempt"], second["attempt"]) == (1, 2)
    assert second["at"] == first["at"]  # the same command, sent again


def test_r24_without_results_a_command_is_sent_max_attempts_times_then_fails_once() -> None:
    # sends at 0, then after each 10-minute timeout a backoff of 1, 2, 4, 8, 16 minutes
    ticks = [tick_line(at(m)) for m in range(0, 200, 1)]
    out = replay([*_suspension(), *ticks], TRACKING)
    assert [n for _a, n, _ in sends(out)] == [1, 2, 3, 4, 5, 6]
    [failed] = of(out, "sim.alerts", kind="command_failed")
    assert (failed["command_id"], failed["attempts"], failed["cause"]) == (_suspend_id(), 6, _suspend_id())
    # the last send timed out 10 min after it went out at 10+1+10+2+10+4+10+8+10+16 = 81 min
    assert failed["at"] == at(91)


def test_r24_the_backoff_doubles_up_to_an_hour() -> None:
    replayer = Replayer(Settings.from_env({**TRACKING, "STREAM_APP_COMMAND_MAX_ATTEMPTS": "12"}))
    lines = iter(enumerate(_suspension(), 1))

    def feed(raw: bytes) -> list[int]:
        number = next(counter)
        return [o.value["attempt"] for o in replayer.line(number, raw) if o.topic == "commands"]

    counter = iter(range(1, 10**6))
    for _number, raw in lines:
        feed(raw)
    minute = 0.0
    for failure in range(1, 12):  # every send fails at once
        minute += 0.5
        feed(result_line("failed", at(minute), result_id=f"f{failure}"))
        backoff = min(2 ** (failure - 1), 60)
        assert feed(tick_line(at(minute + backoff - 0.1))) == []
        assert feed(tick_line(at(minute + backoff))) == [failure + 1]
        minute += backoff


def test_r24_a_rejected_command_fails_at_once() -> None:
    out = replay(
        [*_suspension(), result_line("rejected", at(1), detail="no such card"), tick_line(at(300))], TRACKING
    )
    assert [n for _a, n, _ in sends(out)] == [1]
    [failed] = of(out, "sim.alerts", kind="command_failed")
    assert failed["attempts"] == 1 and "no such card" in failed["detail"]


def test_r24_results_for_unknown_commands_and_repeats_are_recorded_not_dead_lettered() -> None:
    out = replay(
        [
            *_suspension(),
            result_line("applied", at(1), command_id="somebody-elses"),
            result_line("failed", at(2), result_id="same"),
            result_line("failed", at(2), result_id="same"),  # one failure, not two
            tick_line(at(3.5)),
        ],
        TRACKING,
    )
    assert of(out, "sim.deadletter") == []
    assert [n for _a, n, _ in sends(out)] == [1, 2]


# --- R25: only the latest command per dimension is pursued ------------------------------


def test_r25_a_newer_command_supersedes_a_pending_one() -> None:
    out = replay(
        [
            *_suspension(),
            tick_line("2026-04-01T00:00:30+08:00"),  # month start: restore supersedes the suspend
            result_line("applied", "2026-04-01T00:01:00+08:00"),  # the suspend's late result
            tick_line("2026-04-01T02:00:00+08:00"),
        ],
        TRACKING,
    )
    actions = [(a, n) for a, n, _ in sends(out)]
    # the suspend was resent while pending in March; never after the restore superseded it
    assert actions[-1] == ("restore", 1) or ("restore", 2) in actions
    restore_index = next(i for i, (a, _n) in enumerate(actions) if a == "restore")
    assert all(a == "restore" for a, _n in actions[restore_index:])


# --- R26: drift ----------------------------------------------------------------------


def test_r26_drift_with_nothing_pending_is_alerted_and_repaired() -> None:
    out = replay(
        [
            sub_line(quota=GB, updated_at="2026-03-01T00:00:00+08:00"),
            inventory_line("suspended", "2026-03-02T00:00:00+08:00", event_id="dump-7"),
        ],
        TRACKING,
    )
    [drift] = of(out, "sim.alerts", kind="status_drift")
    assert (drift["carrier_status"], drift["cause"]) == ("suspended", "dump-7")
    [repair] = of(out, "sim.commands")
    assert (repair["action"], repair["reason"], repair["trigger"], repair["cause"]) == (
        "restore",
        None,
        "reconcile",
        "dump-7",
    )


def test_r26_a_suspend_reconcile_names_the_first_reason_alphabetically() -> None:
    from .scenario import balance_line, request_line

    out = replay(
        [
            sub_line(quota=GB, updated_at="2026-03-01T00:00:00+08:00"),
            request_line("2026-03-02T00:00:00+08:00", "suspend"),
            result_line("applied", "2026-03-02T00:01:00+08:00", command_id="x"),
            balance_line("2026-03-02T00:02:00+08:00", -5),
            inventory_line("active", "2026-03-02T01:00:00+08:00"),
        ],
        {},  # tracking off: the manual suspend stays pending otherwise
    )
    assert of(out, "sim.alerts", kind="status_drift") == []  # off: recorded only
    tracked = replay(
        [
            sub_line(quota=GB, updated_at="2026-03-01T00:00:00+08:00"),
            request_line("2026-03-02T00:00:00+08:00", "suspend", request_id="rq"),
            result_line(
                "applied",
                "2026-03-02T00:01:00+08:00",
                command_id=derive_id("command", ICCID, "suspend", "manual", "request", "rq", ""),
            ),
            balance_line("2026-03-02T00:02:00+08:00", -5),
            inventory_line("active", "2026-03-02T01:00:00+08:00"),
        ],
        TRACKING,
    )
    [repair] = [c for c in of(tracked, "sim.commands") if c["trigger"] == "reconcile"]
    assert (repair["action"], repair["reason"], repair["reasons"]) == (
        "suspend",
        "arrears",
        ["arrears", "manual"],
    )


def test_r26_a_number_the_carrier_cancelled_is_only_alerted_about() -> None:
    out = replay(
        [
            sub_line(quota=GB, updated_at="2026-03-01T00:00:00+08:00"),
            inventory_line("cancelled", "2026-03-02T00:00:00+08:00"),
        ],
        TRACKING,
    )
    assert len(of(out, "sim.alerts", kind="status_drift")) == 1
    assert of(out, "sim.commands") == []


def test_r26_no_drift_while_a_command_is_pending_nor_from_a_status_older_than_it() -> None:
    out = replay(
        [
            *_suspension(),
            inventory_line("active", at(1)),  # the suspend is still pending
        ],
        TRACKING,
    )
    assert of(out, "sim.alerts", kind="status_drift") == []
    older = replay(
        [
            *_suspension(),
            result_line("applied", at(2)),
            inventory_line("active", "2026-03-10T07:00:00+08:00"),  # dated before the suspend
        ],
        TRACKING,
    )
    assert of(older, "sim.alerts", kind="status_drift") == []
    drift = replay([*_suspension(), result_line("applied", at(2)), inventory_line("active", at(3))], TRACKING)
    assert [c["trigger"] for c in of(drift, "sim.commands")] == ["usage", "reconcile"]


def test_r26_throttling_drift_is_repaired_too() -> None:
    out = replay(
        [
            sub_line(quota=GB, updated_at="2026-03-01T00:00:00+08:00", on_quota="throttle", throttle_kbps=64),
            usage_line(OVER, 2 * GB, record_id="cdr-t"),
            result_line(
                "applied",
                at(1),
                command_id=derive_id("command", ICCID, "throttle", "quota", "usage", "cdr-t", "2026-03"),
            ),
            inventory_line("active", at(5), throttled=False),
        ],
        TRACKING,
    )
    repairs = [c for c in of(out, "sim.commands") if c["trigger"] == "reconcile"]
    assert [(c["action"], c.get("speed_kbps")) for c in repairs] == [("throttle", 64)]


def test_r24_off_by_default_results_are_recorded_and_every_command_sent_once() -> None:
    out = replay(
        [*_suspension(), result_line("failed", at(1)), inventory_line("active", at(2)), tick_line(at(500))]
    )
    assert [n for _a, n, _ in sends(out)] == [1]
    assert of(out, "sim.alerts", kind="command_failed") == of(out, "sim.alerts", kind="status_drift") == []


# --- R27: what /sims/{iccid} shows ---------------------------------------------------------


def test_r27_the_sim_shows_intended_and_carrier_status_and_the_pending_command() -> None:
    policy = Policy(ack_timeout=timedelta(minutes=10))
    now = SENT
    state = new_state(ICCID, now, policy)
    apply_subscription(state, subscription({**_sub(), "quota_bytes": GB}), now, policy)
    apply_usage(state, usage_record(usage_msg(OVER, 2 * GB, record_id="cdr-1")), now, policy)
    body = describe(state, now + timedelta(minutes=1), policy)
    assert body["intended_status"] == "suspended" and body["carrier"] is None
    [pending] = body["pending_commands"]
    assert (pending["action"], pending["attempt"], pending["waiting"]) == ("suspend", 1, "result")
    assert body["next_due"] == {"event": "command_retry", "at": format_time(now + timedelta(minutes=10))}


def _sub() -> dict[str, Any]:
    from .scenario import subscription_msg

    return subscription_msg(updated_at="2026-03-01T00:00:00+08:00")


# --- properties -----------------------------------------------------------------------

results = st.lists(
    st.tuples(
        st.floats(min_value=0.1, max_value=90),  # minutes after the previous event
        st.sampled_from(["applied", "failed", "rejected", "tick", "tick", "unknown"]),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(results, st.integers(min_value=1, max_value=6))
def test_every_pending_command_ends_applied_superseded_or_failed(
    events: list[tuple[float, str]], max_attempts: int
) -> None:
    """Never sent after an applied result for it; attempts count up from 1 to at most the
    maximum; in the end nothing is pending, and a command that was never applied failed
    exactly once."""
    settings_ = Settings.from_env({**TRACKING, "STREAM_APP_COMMAND_MAX_ATTEMPTS": str(max_attempts)})
    replayer = Replayer(settings_)
    lines = [*_suspension()]
    minute = 0.0
    for n, (gap, kind) in enumerate(events):
        minute += gap
        if kind == "tick":
            lines.append(tick_line(at(minute)))
        elif kind == "unknown":
            lines.append(result_line("applied", at(minute), command_id="other", result_id=f"r{n}"))
        else:
            lines.append(result_line(kind, at(minute), result_id=f"r{n}"))
    lines.append(tick_line("2026-03-20T00:00:00+08:00"))  # long after: whatever was pending has ended
    applied, attempts, failed = False, [], 0
    for number, raw in enumerate(lines, 1):
        for output in replayer.line(number, raw):
            if output.topic == "commands":
                assert not applied, "sent after an applied result"
                attempts.append(output.value["attempt"])
            elif output.value.get("kind") == "command_failed":
                failed += 1
        if b'"applied"' in raw and _suspend_id().encode() in raw:
            applied = True
    assert attempts == list(range(1, len(attempts) + 1)) and len(attempts) <= max_attempts
    assert replayer.states[ICCID].pending == {}
    assert failed <= 1 and (applied or failed == 1)


def test_r26_a_rejected_result_with_the_carriers_status_is_not_retried_as_a_reconcile() -> None:
    out = replay(
        [*_suspension(), result_line("rejected", at(1), carrier_status="active"), tick_line(at(30))], TRACKING
    )
    assert len(of(out, "sim.alerts", kind="command_failed")) == 1
    assert [(a, n) for a, n, _ in sends(out)] == [("suspend", 1)]
    # nor by the next inventory rounds, until the intent changes
    later = replay(
        [
            *_suspension(),
            result_line("rejected", at(1), carrier_status="active"),
            inventory_line("active", at(60)),
            inventory_line("active", at(120)),
            tick_line("2026-04-01T00:00:30+08:00"),  # the month start: restore, a new intent
            inventory_line("suspended", "2026-04-01T01:00:00+08:00"),
        ],
        TRACKING,
    )
    assert of(later, "sim.alerts", kind="status_drift") == []
    actions = [a for a, _n, _ in sends(later)]
    assert actions[0] == "suspend" and set(actions[1:]) == {"restore"}  # sent again: no result


def test_r26_the_last_failed_send_with_the_carriers_status_is_not_retried_as_a_reconcile() -> None:
    env = {**TRACKING, "STREAM_APP_COMMAND_MAX_ATTEMPTS": "1"}
    out = replay(
        [*_suspension(), result_line("failed", at(1), carrier_status="active"), tick_line(at(30))], env
    )
    assert len(of(out, "sim.alerts", kind="command_failed")) == 1
    assert of(out, "sim.alerts", kind="status_drift") == []
