"""Command results and reconciliation (R24-R27): was a command really applied?

With acknowledgement tracking on (``Policy.ack_timeout`` set), every command a SIM sends
is *pending* in its dimension (suspension: suspend/restore/cancel; throttling:
throttle/unthrottle) until an ``applied`` result for its ``command_id`` arrives. A send
fails when no result comes within the timeout, or a ``failed`` result does; the same
command (same id, next ``attempt``) goes out again after a backoff of 1 minute,
doubling per failure up to an hour. After ``max_attempts`` failed sends, or at once on
``rejected``, one ``command_failed`` alert goes out and the command stops pending. A
newer command of the same dimension supersedes a pending one, which is never sent
again (R25). Timeouts and resends are due times in the SIM's timeline, like month
starts, so a worker that was down catches up on start-up and replay puts each resend
at its exact instant.

What the carrier says (a result's ``carrier_status``, or ``sim.inventory``) is kept as
the SIM's last known carrier status. When it differs from the intended status and no
command of that dimension is pending, one ``status_drift`` alert goes out and the
intended command is sent anew, trigger ``reconcile`` (R26); a number the carrier reports
cancelled is only alerted about, never re-activated; a status dated before the SIM's
latest command is ignored for drift.

With tracking off, results and statuses are only recorded and shown, and every command
has attempt 1.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from . import outputs as out
from .outputs import Output
from .policy import Policy
from .state import ACTIVE, CANCELLED, HISTORY_LENGTH, SUSPENDED, SimState
from .timeutil import format_time, parse_time

SUSPENSION, THROTTLING = "suspension", "throttling"
DIMENSION = {
    "suspend": SUSPENSION,
    "restore": SUSPENSION,
    "cancel": SUSPENSION,
    "throttle": THROTTLING,
    "unthrottle": THROTTLING,
}
FIRST_BACKOFF = timedelta(minutes=1)
LONGEST_BACKOFF = timedelta(hours=1)
RESULTS_KEPT = 5


def track(state: SimState, command: Output, now: datetime, policy: Policy) -> None:
    """A command was just decided: with tracking on it is pending in its dimension,
    superseding any older one there (R25)."""
    if policy.ack_timeout is None:
        return
    value = command.value
    state.gave_up.pop(DIMENSION[value["action"]], None)  # a new intent: drift counts again
    state.pending[DIMENSION[value["action"]]] = {
        "command": dict(value),
        "attempt": 1,
        "failures": 0,
        "due": format_time(now + policy.ack_timeout),
        "waiting": "ack",
    }


def dues(state: SimState) -> list[tuple[datetime, str]]:
    """(when, dimension) of each pending command's timeout or resend."""
    return sorted((parse_time(p["due"]), dimension) for dimension, p in state.pending.items())


def _backoff(failures: int) -> timedelta:
    doublings = min(failures - 1, 6)  # 2**6 minutes is past the longest backoff already
    return min(FIRST_BACKOFF * (1 << doublings), LONGEST_BACKOFF)


def on_due(state: SimState, dimension: str, at: datetime, now: datetime, policy: Policy) -> list[Output]:
    """The pending command's timer ran out at ``at``: a send failed, or a backoff ended."""
    pending = state.pending[dimension]
    if pending["waiting"] == "ack":
        return _failed(state, dimension, at, "no result within the acknowledgement timeout", policy)
    pending["attempt"] += 1
    pending["waiting"] = "ack"
    pending["due"] = format_time(max(at, now) + (policy.ack_timeout or timedelta(0)))
    command = {**pending["command"], "attempt": pending["attempt"]}
    return [Output(out.COMMANDS, state.iccid, command)]


def _failed(state: SimState, dimension: str, at: datetime, why: str, policy: Policy) -> list[Output]:
    pending = state.pending[dimension]
    pending["failures"] += 1
    if pending["failures"] >= policy.max_attempts:
        return _give_up(state, dimension, at, why)
    pending["waiting"] = "backoff"
    pending["due"] = format_time(at + _backoff(pending["failures"]))
    return []


def _intent(state: SimState, dimension: str) -> str:
    return intended(state) if dimension == SUSPENSION else str(state.throttled)


def _give_up(state: SimState, dimension: str, at: datetime, why: str) -> list[Output]:
    """The command failed for good: one alert, and no drift repair towards the same
    intent (it would be the same change under a new id, refused again) until the
    intent changes."""
    pending = state.pending.pop(dimension)
    state.gave_up[dimension] = _intent(state, dimension)
    command = pending["command"]
    return [
        out.alert(
            state.iccid,
            "command_failed",
            at,
            command["command_id"],
            command["command_id"],
            command_id=command["command_id"],
            attempts=pending["attempt"],
            detail=f"{command['action']} ({command['reason']}/{command['trigger']}) not applied: {why}",
        )
    ]


def on_result(
    state: SimState,
    result_id: str,
    command_id: str,
    outcome: str,
    at: datetime,
    detail: str | None,
    policy: Policy,
) -> list[Output]:
    """R24, R25: a result for one of the SIM's commands (or an unknown or older one,
    which is only recorded)."""
    state.results.append(
        {"result_id": result_id, "command_id": command_id, "outcome": outcome, "at": format_time(at)}
    )
    del state.results[:-RESULTS_KEPT]
    for dimension, pending in list(state.pending.items()):
        if pending["command"]["command_id"] != command_id:
            continue
        if outcome == "applied":
            del state.pending[dimension]
            return []
        why = f"{outcome} by provisioning" + (f": {detail}" if detail else "")
        if outcome == "rejected":
            return _give_up(state, dimension, at, why)
        if pending["waiting"] == "ack":  # a failure of the send in flight, counted once
            return _failed(state, dimension, at, why, policy)
    return []


def intended(state: SimState) -> str:
    return CANCELLED if state.cancelled else SUSPENDED if state.reasons else ACTIVE


def observe(
    state: SimState,
    status: str | None,
    throttled: bool | None,
    at: datetime,
    source: str,
    now: datetime,
    policy: Policy,
) -> list[Output]:
    """R26: what the carrier says about the SIM; drift is repaired when nothing is pending."""
    seen = state.carrier
    if seen is not None and parse_time(seen["at"]) > at:
        return []  # an older observation than the one kept
    state.carrier = {"status": status, "throttled": throttled, "at": format_time(at), "source": source}
    if policy.ack_timeout is None:
        return []
    latest = state.history[-1]["at"] if state.history else None
    if latest is not None and at < parse_time(latest):
        return []
    emitted: list[Output] = []
    if status is not None and _may_repair(state, SUSPENSION) and status != intended(state):
        emitted += _drift_status(state, status, source, now, policy)
    if throttled is not None and _may_repair(state, THROTTLING) and throttled != state.throttled:
        emitted += _drift_throttling(state, throttled, source, now, policy)
    return emitted


def _may_repair(state: SimState, dimension: str) -> bool:
    """Nothing pending, and not an intent whose command already failed for good."""
    return dimension not in state.pending and state.gave_up.get(dimension) != _intent(state, dimension)


def _drift_alert(state: SimState, source: str, now: datetime, carrier: str, detail: str) -> Output:
    return out.alert(
        state.iccid,
        "status_drift",
        now,
        source,
        f"{source}|{detail}",
        carrier_status=carrier,
        detail=detail,
    )


def _drift_status(state: SimState, status: str, source: str, now: datetime, policy: Policy) -> list[Output]:
    want = intended(state)
    detail = f"the carrier reports {status}, stream-app intends {want}"
    emitted = [_drift_alert(state, source, now, status, detail)]
    if status == CANCELLED:
        return emitted  # a cancelled number is never re-activated by a command
    if want == CANCELLED:
        action, reason = "cancel", "expiry"
    elif want == SUSPENDED:
        action, reason = "suspend", sorted(state.reasons)[0]
    else:
        action, reason = "restore", None
    command = out.command(state.iccid, action, reason, "reconcile", now, state.reasons, source, "")
    emitted.append(command)
    remember(state, command)
    track(state, command, now, policy)
    return emitted


def _drift_throttling(
    state: SimState, throttled: bool, source: str, now: datetime, policy: Policy
) -> list[Output]:
    carrier = "throttled" if throttled else "not throttled"
    want = "throttled" if state.throttled else "not throttled"
    detail = f"the carrier reports the SIM {carrier}, stream-app intends it {want}"
    emitted = [
        _drift_alert(state, source, now, state.carrier["status"] if state.carrier else carrier, detail)
    ]
    sub = state.subscription
    if state.throttled:
        if sub is None or sub.throttle_kbps is None:
            return emitted
        command = out.command(
            state.iccid,
            "throttle",
            "quota",
            "reconcile",
            now,
            state.reasons,
            source,
            "",
            speed_kbps=sub.throttle_kbps,
        )
    else:
        command = out.command(state.iccid, "unthrottle", "quota", "reconcile", now, state.reasons, source, "")
    emitted.append(command)
    remember(state, command)
    track(state, command, now, policy)
    return emitted


def remember(state: SimState, command: Output) -> None:
    """Keep the last commands, newest last (for "why is this card stopped?")."""
    value = command.value
    state.history.append({k: value[k] for k in ("command_id", "action", "reason", "trigger", "at", "cause")})
    del state.history[:-HISTORY_LENGTH]
