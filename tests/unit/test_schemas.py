"""schemas/ against the code: the schemas are valid, describe every output the engine
emits, and accept exactly the inputs that stream_app.domain.inputs accepts.

Where the two cannot agree by construction, the case is named and explained here
instead of being left out silently:

* Cross-field and database rules a JSON Schema cannot express are excluded from the
  agreement checks: ``end_before_start`` (end compared with start), ``bad_timezone``
  (whether a well-formed name is in the worker's IANA database).
* Cases where the two once disagreed (lenient ISO 8601 times, integral floats, non-ASCII
  ICCIDs) are kept as agreement tests.
"""

from __future__ import annotations

import copy
import json
import re
import zoneinfo
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from stream_app import topics
from stream_app.domain import InvalidInput, subscription, usage_record
from stream_app.domain.outputs import derive_id
from stream_app.settings import Settings
from stream_app.tools.replay import replay_lines

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_BASE = "https://stream-app.local/schemas/"

# logical topic (topics.py) -> schema file stem
SCHEMA_OF_TOPIC = {
    topics.USAGE: "usage",
    topics.SUBSCRIPTIONS: "subscription",
    topics.BILLING: "balance",
    topics.REQUESTS: "request",
    topics.COMMAND_RESULTS: "command_result",
    topics.INVENTORY: "carrier_status",
    topics.POOLS: "pool",
    topics.COMMANDS: "command",
    topics.ALERTS: "alert",
    topics.CHARGES: "charge",
    topics.AUDIT: "audit",
    topics.DEADLETTER: "deadletter",
}

ICCID = "89860012345678901234"
ICCID_LOWER = "898602b9201650109563"  # a letter ICCID as a CRM may send it
UNKNOWN = "8986040000000000001"  # 19 characters, no subscription
GB = 1_000_000_000
MB = 1_000_000


@cache
def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    return loaded


@cache
def validator(name: str) -> Any:
    return Draft202012Validator(schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_accepts(name: str, message: object) -> bool:
    return bool(validator(name).is_valid(message))


def errors(name: str, message: object) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(name).iter_errors(message)
    ]


def _well_formed_zone_name(value: object) -> bool:
    pattern = schema("subscription")["properties"]["timezone"]["pattern"]
    return isinstance(value, str) and re.search(pattern, value) is not None


def code_verdict(kind: str, message: dict[str, Any]) -> bool | None:
    """True/False: the domain validator accepts/rejects; None: a rule no schema can express.

    Those rules: ``end_before_start`` (compares two fields), and ``bad_timezone`` for a
    well-formed name the IANA database does not hold (a malformed name, such as an
    absolute path, the schema's pattern rejects, so that one must agree).
    """
    check: Callable[[dict[str, Any]], object] = usage_record if kind == "usage" else subscription
    try:
        check(message)
    except InvalidInput as exc:
        if exc.code == "end_before_start":
            return None
        if exc.code == "bad_timezone" and _well_formed_zone_name(message.get("timezone")):
            return None
        return False
    return True


# --- a. the schema files themselves ---------------------------------------------------


def test_there_is_one_schema_per_topic_message_and_no_other() -> None:
    directional = {s.logical for s in topics.REGISTRY if s.direction in ("in", "out")}
    assert set(SCHEMA_OF_TOPIC) == directional
    on_disk = {p.name for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == {f"{stem}.schema.json" for stem in SCHEMA_OF_TOPIC.values()}


@pytest.mark.parametrize("name", sorted(SCHEMA_OF_TOPIC.values()))
def test_schema_is_a_valid_2020_12_schema(name: str) -> None:
    body = schema(name)
    Draft202012Validator.check_schema(body)
    assert body["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert body["$id"] == f"{SCHEMA_BASE}{name}.schema.json"
    assert body["title"]
    assert body["description"]
    assert body["type"] == "object"


@pytest.mark.parametrize(
    ("name", "open_"),
    [(SCHEMA_OF_TOPIC[t], True) for t in topics.INPUTS]
    + [(SCHEMA_OF_TOPIC[t], False) for t in topics.OUTPUTS],
)
def test_inputs_allow_more_fields_and_outputs_list_every_field(name: str, open_: bool) -> None:
    assert schema(name)["additionalProperties"] is open_


def test_every_known_time_zone_matches_the_timezone_pattern() -> None:
    pattern = re.compile(schema("subscription")["properties"]["timezone"]["pattern"])
    assert all(pattern.search(name) for name in zoneinfo.available_timezones())


# --- b. every output of a realistic replay matches its topic's schema ------------------

RENEWED = "89860012345678900001"  # expires, is renewed within the grace period
LAPSED = "89860012345678900002"  # expires, is cancelled after the grace period, starts a new life
SLOWED = "89860012345678900003"  # on_quota throttle: slowed at the quota, an add-on lifts it
TOPPED = "89860012345678900004"  # suspended at the quota, an add-on pack restores it
ACKED = "89860012345678900005"  # its suspend is applied at the first send
REFUSED = "89860012345678900006"  # its suspend fails, is sent again, then rejected
SILENT = "89860012345678900007"  # its suspend never gets a result: sent until it fails
DRIFTED = "89860012345678900008"  # active, the carrier says suspended: reconciled
GONE = "89860012345678900009"  # the carrier says cancelled: an alert, never re-activated
LOOSE = "89860012345678900010"  # throttled, the carrier says not: throttled again
MEMBER_1 = "89860012345678900011"  # in pool fleet-1, which runs out
MEMBER_2 = "89860012345678900012"  # in fleet-1 too; leaves it
LATECOMER = "89860012345678900013"  # joins fleet-1 while it is exhausted
STRAY = "89860012345678900014"  # draws from pool ghost, never defined


def _line(topic: str, value: object) -> bytes:
    return orjson.dumps({"topic": topic, "value": value})


def _usage(record_id: str, iccid: str, start: str, end: str, total: int) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "iccid": iccid,
        "carrier": "cmcc",
        "start": start,
        "end": end,
        "bytes_up": total // 4,
        "bytes_down": total - total // 4,
    }


def _subscription(iccid: str, updated_at: str, expires_at: str | None) -> dict[str, Any]:
    return {
        "iccid": iccid,
        "plan_id": "iot-1g",
        "quota_bytes": 1 * GB,
        "valid_from": "2026-01-01T00:00:00+08:00",
        "expires_at": expires_at,
        "auto_suspend": False,
        "updated_at": updated_at,
    }


def _balance(event_id: str, iccid: str, at: str, balance: int) -> dict[str, Any]:
    return {"event_id": event_id, "iccid": iccid, "at": at, "balance": balance, "currency": "CNY"}


def _request(request_id: str, iccid: str, action: str, at: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "iccid": iccid,
        "action": action,
        "at": at,
        "requested_by": "ops@example.com",
    }


class _Script:
    """Replay lines, and the messages in them with their topic's schema and validity."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self._logical = {v: k for k, v in Settings.from_env({}).topic_names.items()}

    def add(self, topic: str, value: dict[str, Any], valid: bool = True) -> None:
        self.messages.append((SCHEMA_OF_TOPIC[self._logical[topic]], value, valid))
        self.lines.append(_line(topic, value))

    def tick(self, at: str) -> None:
        self.lines.append(orjson.dumps({"tick": at}))

    def raw(self, line: bytes) -> None:
        self.lines.append(line)


def _quota_and_bad_input(s: _Script) -> None:
    """March and 1 April: quota suspend and month-start restore (R4, R6), thresholds,
    forecast, a duplicate, unknown and late usage (R3, R8, R9, R14), bad input (R2, R15)."""
    sub_a = {
        **_subscription(ICCID, "2026-03-25T00:00:00+08:00", "2027-01-01T00:00:00+08:00"),
        "auto_suspend": True,
        "timezone": "Asia/Shanghai",
        "crm_ref": "C-1",  # more fields may be added
    }
    sub_b = {**_subscription(ICCID_LOWER, "2026-03-25T00:00:01+08:00", None), "warn_at": [0.5, 1.0]}
    a2 = _usage("a-2", ICCID, "2026-03-29T10:00:00+08:00", "2026-03-29T10:30:00+08:00", 450 * MB)
    negative = _usage("a-x", ICCID, "2026-03-30T12:00:00+08:00", "2026-03-30T12:10:00+08:00", MB)
    negative["bytes_up"] = -5
    missing = _usage("a-y", ICCID, "2026-03-30T12:00:00+08:00", "2026-03-30T12:10:00+08:00", MB)
    del missing["carrier"]
    s.add("sim.subscriptions", sub_a)
    s.add("sim.subscriptions", sub_b)
    s.add(
        "sim.usage", _usage("a-1", ICCID, "2026-03-28T08:00:00+08:00", "2026-03-28T08:30:00+08:00", 500 * MB)
    )
    s.add(
        "sim.usage", _usage("b-1", ICCID_LOWER, "2026-03-28T09:00:00+08:00", "2026-03-28T09:40:00Z", 900 * MB)
    )
    s.add("sim.usage", a2)  # 95 %: crosses 80 % and 90 % at once, and forecasts exhaustion
    s.add("sim.usage", a2)  # duplicate: counted once
    s.add(
        "sim.usage", _usage("a-3", ICCID, "2026-03-30T10:00:00+08:00", "2026-03-30T10:20:00+08:00", 100 * MB)
    )
    s.add("sim.usage", _usage("u-1", UNKNOWN, "2026-03-30T11:00:00+08:00", "2026-03-30T11:05:00+08:00", MB))
    s.raw(b'{"topic": "sim.usage", "value": {"record_id": ')  # not JSON
    s.add(
        "sim.usage",
        _usage("a-z", "8986-0012", "2026-03-30T12:00:00+08:00", "2026-03-30T12:10:00+08:00", 1),
        False,
    )
    s.add("sim.usage", negative, False)
    s.add("sim.usage", missing, False)
    s.add("sim.billing", _balance("bal-1", ICCID_LOWER, "2026-03-31T12:00:00+08:00", -120))  # B: arrears
    s.tick("2026-04-01T00:00:30+08:00")  # month start: A's quota cleared
    # Late record for March (start within the dedupe horizon) pushing B past its quota.
    s.add(
        "sim.usage",
        _usage("b-2", ICCID_LOWER, "2026-03-31T23:00:00+08:00", "2026-03-31T23:30:00+08:00", 200 * MB),
    )
    # Older than the dedupe horizon: valid, but dead-lettered for reconciliation.
    s.add("sim.usage", _usage("a-0", ICCID, "2026-03-20T10:00:00+08:00", "2026-03-20T10:20:00+08:00", MB))
    s.raw(_line("sim.nope", {}))


def _arrears_manual_and_quota_raised(s: _Script) -> None:
    """1-2 April: manual suspend accepted and refused, arrears and payment with and
    without other reasons (R5, R10, R13), and a quota raised over the month's usage (R7)."""
    s.add("sim.requests", _request("req-1", ICCID, "suspend", "2026-04-01T09:00:00+08:00"))  # A: accepted
    # B is in arrears: refused.
    s.add("sim.requests", _request("req-2", ICCID_LOWER, "suspend", "2026-04-01T09:30:00+08:00"))
    s.tick("2026-04-02T00:00:00+08:00")
    s.add("sim.billing", _balance("bal-2", ICCID_LOWER, "2026-04-02T09:00:00+08:00", 0))  # B pays: restore
    s.add("sim.billing", _balance("bal-3", ICCID, "2026-04-02T09:30:00+08:00", -1))  # A: audit only
    s.add("sim.billing", _balance("bal-4", ICCID, "2026-04-02T09:45:00+08:00", 300))  # A: audit only
    s.add("sim.requests", _request("req-3", ICCID_LOWER, "resume", "2026-04-02T10:00:00+08:00"))  # refused
    s.add("sim.requests", _request("req-4", ICCID, "resume", "2026-04-02T10:30:00+08:00"))  # A: restore
    # A over April's quota: suspend; then an add-on pack raises the quota: restore.
    s.add(
        "sim.usage", _usage("a-4", ICCID, "2026-04-02T11:00:00+08:00", "2026-04-02T11:30:00+08:00", 1100 * MB)
    )
    s.add(
        "sim.subscriptions",
        {
            **_subscription(ICCID, "2026-04-02T12:00:00+08:00", "2027-01-01T00:00:00+08:00"),
            "quota_bytes": 2 * GB,
            "auto_suspend": True,
        },
    )


def _expiry_renewal_cancel_and_new_life(s: _Script) -> None:
    """April to September: warnings, expiry, retention charges, renewal in grace, grace
    ending, cancellation and a new subscription after it (R11, R12)."""
    s.add(
        "sim.subscriptions", _subscription(RENEWED, "2026-04-03T00:00:00+08:00", "2026-05-15T00:00:00+08:00")
    )
    s.add(
        "sim.subscriptions", _subscription(LAPSED, "2026-04-03T00:00:01+08:00", "2026-05-20T00:00:00+08:00")
    )
    s.tick("2026-04-16T00:00:00+08:00")  # 30 days before RENEWED expires
    s.tick("2026-05-16T00:00:00+08:00")  # RENEWED: 7 and 1 days before, expired; LAPSED: 30 and 7 days
    s.add("sim.requests", _request("req-5", RENEWED, "suspend", "2026-05-16T09:00:00+08:00"))  # refused
    s.tick("2026-05-21T00:00:00+08:00")  # LAPSED: 1 day before, expired
    s.tick("2026-06-01T00:00:30+08:00")  # month start: June's retention fee for both
    # Renewal within the grace period: restore.
    s.add(
        "sim.subscriptions", _subscription(RENEWED, "2026-06-10T00:00:00+08:00", "2027-06-15T00:00:00+08:00")
    )
    s.tick("2026-08-21T00:00:00+08:00")  # LAPSED: July and August fees, grace ending, cancelled
    s.tick("2026-09-01T00:00:30+08:00")  # no fee for a cancelled number
    # A newer subscription with a later valid_from: the number's new life.
    s.add(
        "sim.subscriptions",
        {
            **_subscription(LAPSED, "2026-09-05T00:00:00+08:00", "2027-09-05T00:00:00+08:00"),
            "valid_from": "2026-09-05T00:00:00+08:00",
        },
    )


def _addons_and_throttling(s: _Script) -> None:
    """September: a SIM throttled at its quota, lifted by an add-on pack, throttled again
    and freed at the month start; a suspended SIM restored by a pack (R22, R23)."""
    slowed = {
        **_subscription(SLOWED, "2026-09-06T00:00:00+08:00", None),
        "on_quota": "throttle",
        "throttle_kbps": 128,
    }
    pack = {"addon_id": "pack-1", "month": "2026-09", "bytes": 500 * MB}
    s.add("sim.subscriptions", slowed)
    s.add(
        "sim.usage",
        _usage("s-1", SLOWED, "2026-09-06T10:00:00+08:00", "2026-09-06T10:30:00+08:00", 1100 * MB),
    )
    s.add("sim.subscriptions", {**slowed, "updated_at": "2026-09-07T00:00:00+08:00", "addons": [pack]})
    s.add(
        "sim.usage", _usage("s-2", SLOWED, "2026-09-08T10:00:00+08:00", "2026-09-08T10:30:00+08:00", 500 * MB)
    )
    topped = {**_subscription(TOPPED, "2026-09-06T00:00:00+08:00", None), "auto_suspend": True}
    s.add("sim.subscriptions", topped)
    s.add(
        "sim.usage",
        _usage("t-1", TOPPED, "2026-09-06T11:00:00+08:00", "2026-09-06T11:30:00+08:00", 1200 * MB),
    )
    again = {**topped, "addons": [{**pack, "addon_id": "pack-9", "bytes": GB}]}
    s.add("sim.subscriptions", {**again, "updated_at": "2026-09-07T00:00:00+08:00"})
    s.add("sim.subscriptions", {**again, "updated_at": "2026-09-08T00:00:00+08:00"})  # counted once
    s.tick("2026-10-01T00:00:30+08:00")  # SLOWED: the month start ends the throttling


def _pools(s: _Script) -> None:
    """October: a pool runs out and stops its members, a latecomer is stopped at once, a
    member leaves, a pack lifts the pool, the month start restores; a pool nobody
    defined (R17-R21)."""
    fleet = {
        "pool_id": "fleet-1",
        "quota_bytes": 2 * GB,
        "auto_suspend": True,
        "updated_at": "2026-10-02T00:00:00+08:00",
    }
    s.add("sim.pools", fleet)
    for iccid in (MEMBER_1, MEMBER_2):
        member = {
            **_subscription(iccid, "2026-10-02T00:00:01+08:00", None),
            "pool_id": "fleet-1",
            "quota_bytes": None,
        }
        s.add("sim.subscriptions", member)
    s.add("sim.usage", _usage("m-1", MEMBER_1, "2026-10-03T08:00:00+08:00", "2026-10-03T08:30:00+08:00", GB))
    s.add("sim.usage", _usage("m-2", MEMBER_2, "2026-10-03T09:00:00+08:00", "2026-10-03T09:30:00+08:00", GB))
    late = {
        **_subscription(LATECOMER, "2026-10-04T00:00:00+08:00", None),
        "pool_id": "fleet-1",
        "quota_bytes": None,
    }
    s.add("sim.subscriptions", late)
    s.add(
        "sim.subscriptions",
        {**_subscription(MEMBER_2, "2026-10-05T00:00:00+08:00", None), "quota_bytes": 5 * GB},
    )
    pack = {"addon_id": "pool-pack", "month": "2026-10", "bytes": GB}
    s.add("sim.pools", {**fleet, "updated_at": "2026-10-06T00:00:00+08:00", "addons": [pack]})
    s.add("sim.usage", _usage("m-3", MEMBER_1, "2026-10-07T08:00:00+08:00", "2026-10-07T08:30:00+08:00", GB))
    stray = {
        **_subscription(STRAY, "2026-10-02T00:00:01+08:00", None),
        "pool_id": "ghost",
        "quota_bytes": None,
    }
    s.add("sim.subscriptions", stray)
    s.add("sim.usage", _usage("g-1", STRAY, "2026-10-03T08:00:00+08:00", "2026-10-03T08:30:00+08:00", MB))
    s.add(
        "sim.pools",
        {"pool_id": "bad pool", "quota_bytes": GB, "updated_at": "2026-10-08T00:00:00+08:00"},
        False,
    )
    s.tick("2026-11-01T00:00:30+08:00")


def _command_id(iccid: str, record_id: str, month: str = "2026-03") -> str:
    return derive_id("command", iccid, "suspend", "quota", "usage", record_id, month)


def _result(
    result_id: str, iccid: str, command_id: str, outcome: str, at: str, **extra: Any
) -> dict[str, Any]:
    return {
        "result_id": result_id,
        "command_id": command_id,
        "iccid": iccid,
        "outcome": outcome,
        "at": at,
        **extra,
    }


def _results_and_drift(s: _Script) -> None:
    """March, acknowledgement tracking on (10 minutes, 3 sends): a suspend applied, one
    failed then rejected, one never answered, drift repaired and alerted (R24-R26)."""
    for iccid in (ACKED, REFUSED, SILENT, DRIFTED, GONE):
        s.add(
            "sim.subscriptions",
            {**_subscription(iccid, "2026-03-02T00:00:00+08:00", None), "auto_suspend": True},
        )
    loose = {
        **_subscription(LOOSE, "2026-03-02T00:00:00+08:00", None),
        "on_quota": "throttle",
        "throttle_kbps": 64,
    }
    s.add("sim.subscriptions", loose)
    for iccid in (ACKED, REFUSED, SILENT, LOOSE):
        s.add(
            "sim.usage",
            _usage(f"{iccid}-1", iccid, "2026-03-03T08:00:00+08:00", "2026-03-03T08:30:00+08:00", 2 * GB),
        )
    s.add(
        "sim.command-results",
        _result(
            "res-1",
            ACKED,
            _command_id(ACKED, f"{ACKED}-1"),
            "applied",
            "2026-03-03T08:31:00+08:00",
            carrier_status="suspended",
        ),
    )
    s.add(
        "sim.command-results",
        _result(
            "res-2",
            REFUSED,
            _command_id(REFUSED, f"{REFUSED}-1"),
            "failed",
            "2026-03-03T08:31:00+08:00",
            detail="busy",
        ),
    )
    s.tick("2026-03-03T08:35:00+08:00")  # REFUSED sent again (attempt 2) after a minute
    s.add(
        "sim.command-results",
        _result(
            "res-3",
            REFUSED,
            _command_id(REFUSED, f"{REFUSED}-1"),
            "rejected",
            "2026-03-03T08:36:00+08:00",
            detail="no such card",
        ),
    )
    s.add(
        "sim.command-results",
        _result("res-4", ACKED, "not-a-command-of-ours", "applied", "2026-03-03T08:37:00+08:00"),
    )
    s.add(
        "sim.inventory",
        {"event_id": "inv-1", "iccid": DRIFTED, "status": "suspended", "at": "2026-03-03T09:00:00+08:00"},
    )
    s.add(
        "sim.inventory",
        {"event_id": "inv-2", "iccid": GONE, "status": "cancelled", "at": "2026-03-03T09:00:00+08:00"},
    )
    throttle_id = derive_id("command", LOOSE, "throttle", "quota", "usage", f"{LOOSE}-1", "2026-03")
    s.add("sim.command-results", _result("res-5", LOOSE, throttle_id, "applied", "2026-03-03T08:32:00+08:00"))
    s.add(
        "sim.inventory",
        {
            "event_id": "inv-3",
            "iccid": LOOSE,
            "status": "active",
            "throttled": False,
            "at": "2026-03-03T10:00:00+08:00",
        },
    )
    s.tick("2026-03-03T12:00:00+08:00")  # SILENT: three sends without a result, then command_failed


def _scenario() -> tuple[list[bytes], list[tuple[str, dict[str, Any], bool]]]:
    """Replay lines, and the messages in them with their topic's schema and validity."""
    script = _Script()
    _quota_and_bad_input(script)
    _arrears_manual_and_quota_raised(script)
    _expiry_renewal_cancel_and_new_life(script)
    _addons_and_throttling(script)
    _pools(script)
    return script.lines, script.messages


TRACKING = {"STREAM_APP_COMMAND_ACK_TIMEOUT": "10m", "STREAM_APP_COMMAND_MAX_ATTEMPTS": "3"}


def _tracked_scenario() -> tuple[list[bytes], list[tuple[str, dict[str, Any], bool]]]:
    """Replay lines run with acknowledgement tracking on."""
    script = _Script()
    _results_and_drift(script)
    return script.lines, script.messages


@cache
def _replay_cached() -> tuple[bytes, ...]:
    lines, _ = _scenario()
    tracked, _ = _tracked_scenario()
    return (
        *replay_lines(Settings.from_env({}), lines),
        *replay_lines(Settings.from_env(TRACKING), tracked),
    )


def _replay() -> list[dict[str, Any]]:
    """Fresh decoded outputs on every call, so a test may change them."""
    return [orjson.loads(out) for out in _replay_cached()]


def _values(outputs: list[dict[str, Any]], topic: str, **match: Any) -> list[dict[str, Any]]:
    return [
        o["value"]
        for o in outputs
        if o["topic"] == topic and all(o["value"].get(k) == v for k, v in match.items())
    ]


def test_scenario_inputs_match_their_schemas_as_intended() -> None:
    _, messages = _scenario()
    _, tracked = _tracked_scenario()
    for name, message, valid in messages + tracked:
        assert schema_accepts(name, message) is valid, (name, message, errors(name, message))


def test_every_replay_output_matches_the_schema_of_its_topic() -> None:
    env_settings = Settings.from_env({})
    schema_of_name = {env_settings.topic(t): SCHEMA_OF_TOPIC[t] for t in topics.OUTPUTS}
    outputs = _replay()
    assert outputs
    for output in outputs:
        assert set(output) == {"topic", "key", "value"}
        name = schema_of_name[output["topic"]]  # KeyError: an output on a topic with no schema
        assert errors(name, output["value"]) == [], output
        if output["value"].get("iccid") is None and "pool_id" in output["value"]:
            assert output["key"] == output["value"]["pool_id"]  # a pool's alerts: by pool id
        elif name != "deadletter":
            assert output["key"] == output["value"]["iccid"]  # every other output by ICCID


# Every (action, reason, trigger) the engine can emit: R4-R7, R10, R11, R13.
EXPECTED_COMMANDS = {
    ("suspend", "quota", "usage"),
    ("restore", "quota", "month_start"),
    ("restore", "quota", "quota_raised"),
    ("suspend", "arrears", "balance"),
    ("restore", "arrears", "payment"),
    ("suspend", "expiry", "expiry_time"),
    ("restore", "expiry", "renewal"),
    ("cancel", "expiry", "grace_elapsed"),
    ("suspend", "manual", "request"),
    ("restore", "manual", "request"),
    ("throttle", "quota", "usage"),
    ("unthrottle", "quota", "quota_raised"),
    ("unthrottle", "quota", "month_start"),
    ("restore", None, "reconcile"),
    ("throttle", "quota", "reconcile"),
    ("suspend", "pool", "pool_exhausted"),
    ("restore", "pool", "pool_left"),
    ("restore", "pool", "quota_raised"),
    ("restore", "pool", "month_start"),
}


def test_the_replay_covers_every_output_kind_the_engine_emits() -> None:
    """Guards the test above against passing vacuously when the scenario stops producing."""
    outputs = _replay()
    commands = {(c["action"], c["reason"], c["trigger"]) for c in _values(outputs, "sim.commands")}
    assert commands == EXPECTED_COMMANDS
    assert {c["action"] for c in _values(outputs, "sim.commands")} == set(
        schema("command")["properties"]["action"]["enum"]
    )
    kinds = {a["kind"] for a in _values(outputs, "sim.alerts")}
    assert kinds == set(schema("alert")["properties"]["kind"]["enum"])  # the kinds of docs/rules.md
    reasons = schema("audit")["$defs"]["reason"]["enum"]
    assert {(a["change"], a["reason"]) for a in _values(outputs, "sim.audit")} == {
        *((change, reason) for change in ("reason_added", "reason_cleared") for reason in reasons),
        ("cancelled", "expiry"),
        ("new_life", "expiry"),
        ("throttled", "quota"),
        ("unthrottled", "quota"),
    }
    assert {a["change"] for a in _values(outputs, "sim.audit")} == set(
        schema("audit")["properties"]["change"]["enum"]
    )
    assert _values(outputs, "sim.charges")
    errors_seen = {d["error"] for d in _values(outputs, "sim.deadletter")}
    assert {
        "invalid_json",
        "bad_iccid",
        "negative_bytes",
        "missing_field",
        "beyond_dedupe_horizon",
        "unknown_topic",
    } <= errors_seen


def test_the_replay_fires_each_threshold_once_per_sim_and_month() -> None:
    thresholds = [
        (a["iccid"], a["month"], a["threshold"])
        for a in _values(_replay(), "sim.alerts", kind="quota_threshold")
    ]
    assert len(thresholds) == len(set(thresholds))  # the duplicate record did not fire anything twice
    assert (ICCID, "2026-03", 0.8) in thresholds and (ICCID, "2026-04", 0.8) in thresholds


def test_the_replay_only_commands_when_the_reason_set_empties_or_fills() -> None:
    """R5: A's arrears came and went while it was manually suspended: audit only."""
    outputs = _replay()
    assert not _values(outputs, "sim.commands", iccid=ICCID, reason="arrears")
    added, cleared = (
        _values(outputs, "sim.audit", iccid=ICCID, reason="arrears", change=change)
        for change in ("reason_added", "reason_cleared")
    )
    assert [(a["reasons_before"], a["reasons_after"]) for a in added + cleared] == [
        (["manual"], ["arrears", "manual"]),
        (["arrears", "manual"], ["manual"]),
    ]
    assert all(a["status_before"] == a["status_after"] == "suspended" for a in added + cleared)


def test_the_replay_answers_each_manual_request() -> None:
    outputs = _replay()
    rejected = _values(outputs, "sim.alerts", kind="request_rejected")
    assert {a["cause"] for a in rejected} == {"req-2", "req-3", "req-5"}
    assert {c["cause"] for c in _values(outputs, "sim.commands", reason="manual")} == {"req-1", "req-4"}


def test_the_replay_warns_charges_renews_cancels_and_starts_a_new_life() -> None:
    outputs = _replay()
    for iccid in (RENEWED, LAPSED):
        warnings = _values(outputs, "sim.alerts", iccid=iccid, kind="expiry_upcoming")
        assert len(warnings) == 3, warnings  # 30, 7 and 1 days before
    charges = {
        iccid: [c["month"] for c in _values(outputs, "sim.charges", iccid=iccid)]
        for iccid in (RENEWED, LAPSED)
    }
    assert charges == {
        RENEWED: ["2026-05", "2026-06"],
        LAPSED: ["2026-05", "2026-06", "2026-07", "2026-08"],  # none once cancelled
    }
    assert {(c["amount"], c["currency"], c["kind"]) for c in _values(outputs, "sim.charges")} == {
        (500, "CNY", "number_retention")
    }
    assert not _values(outputs, "sim.alerts", iccid=RENEWED, kind="grace_ending")
    [grace] = _values(outputs, "sim.alerts", iccid=LAPSED, kind="grace_ending")
    [cancel] = _values(outputs, "sim.commands", iccid=LAPSED, action="cancel")
    assert grace["cancel_at"] == cancel["at"] == "2026-08-19T16:00:00Z"  # 3 months after expiry, Shanghai
    assert cancel["reasons"] == ["expiry"] and cancel["cause"] is None
    assert [a["change"] for a in _values(outputs, "sim.audit", iccid=LAPSED)] == [
        "reason_added",
        "cancelled",
        "new_life",
    ]
    assert [c["action"] for c in _values(outputs, "sim.commands", iccid=RENEWED)] == ["suspend", "restore"]


# Near misses of real outputs: each schema rule must refuse what the engine never emits.
_ABSENT = object()  # as a value in a near miss: the field is left out
_NEAR_MISSES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("suspend_with_two_reasons", "sim.commands", {"action": "suspend"}, {"reasons": ["arrears", "manual"]}),
    (
        "suspend_with_other_reason",
        "sim.commands",
        {"action": "suspend", "reason": "quota"},
        {"reasons": ["expiry"]},
    ),
    ("restore_with_reasons_left", "sim.commands", {"action": "restore"}, {"reasons": ["manual"]}),
    ("cancel_without_expiry", "sim.commands", {"action": "cancel"}, {"reasons": ["arrears"]}),
    ("cancel_for_arrears", "sim.commands", {"action": "cancel"}, {"reason": "arrears"}),
    ("cancel_by_request", "sim.commands", {"action": "cancel"}, {"trigger": "request"}),
    ("cancel_with_cause", "sim.commands", {"action": "cancel"}, {"cause": "req-1"}),
    (
        "arrears_by_request",
        "sim.commands",
        {"reason": "arrears", "action": "suspend"},
        {"trigger": "request"},
    ),
    ("payment_without_cause", "sim.commands", {"trigger": "payment"}, {"cause": None}),
    ("month_start_with_cause", "sim.commands", {"trigger": "month_start"}, {"cause": "a-1"}),
    ("renewal_by_record", "sim.commands", {"trigger": "renewal"}, {"cause": "a-1"}),
    ("added_but_absent", "sim.audit", {"change": "reason_added", "reason": "manual"}, {"reasons_after": []}),
    (
        "cleared_but_present",
        "sim.audit",
        {"change": "reason_cleared", "reason": "expiry"},
        {"reasons_after": ["expiry"]},
    ),
    ("status_disagrees_with_set", "sim.audit", {"change": "reason_added"}, {"status_after": "active"}),
    ("cancelled_by_payment", "sim.audit", {"change": "cancelled"}, {"trigger": "payment"}),
    ("cancelled_still_suspended", "sim.audit", {"change": "cancelled"}, {"status_after": "suspended"}),
    (
        "cancelled_from_active",
        "sim.audit",
        {"change": "cancelled"},
        {"reasons_before": [], "status_before": "active"},
    ),
    ("new_life_keeps_reasons", "sim.audit", {"change": "new_life"}, {"reasons_after": ["expiry"]}),
    ("new_life_suspended", "sim.audit", {"change": "new_life"}, {"status_after": "suspended"}),
    ("new_life_from_suspended", "sim.audit", {"change": "new_life"}, {"status_before": "suspended"}),
    ("charge_without_at", "sim.charges", {}, {"at": _ABSENT}),
    ("charge_in_floats", "sim.charges", {}, {"amount": 5.5}),
    ("charge_of_other_kind", "sim.charges", {}, {"kind": "late_fee"}),
    ("charge_bad_month", "sim.charges", {}, {"month": "2026-5"}),
    ("grace_ending_without_cancel_at", "sim.alerts", {"kind": "grace_ending"}, {"cancel_at": _ABSENT}),
    ("grace_ending_with_cause", "sim.alerts", {"kind": "grace_ending"}, {"cause": "a-1"}),
    ("expiry_upcoming_without_expiry", "sim.alerts", {"kind": "expiry_upcoming"}, {"expires_at": _ABSENT}),
    ("expiry_upcoming_with_month", "sim.alerts", {"kind": "expiry_upcoming"}, {"month": "2026-05"}),
    ("rejection_without_request", "sim.alerts", {"kind": "request_rejected"}, {"cause": None}),
    ("rejection_without_detail", "sim.alerts", {"kind": "request_rejected"}, {"detail": _ABSENT}),
    (
        "threshold_with_cancel_at",
        "sim.alerts",
        {"kind": "quota_threshold"},
        {"cancel_at": "2026-08-19T16:00:00Z"},
    ),
]


@pytest.mark.parametrize(
    ("topic", "match", "change"), [pytest.param(t, m, c, id=name) for name, t, m, c in _NEAR_MISSES]
)
def test_schemas_refuse_near_misses_of_real_outputs(
    topic: str, match: dict[str, Any], change: dict[str, Any]
) -> None:
    """The first emitted output matching ``match`` is valid; with ``change`` applied, it is not."""
    name = {"sim.commands": "command", "sim.audit": "audit", "sim.charges": "charge", "sim.alerts": "alert"}[
        topic
    ]
    found = _values(_replay(), topic, **match)
    assert found, f"the scenario emits no {topic} output matching {match}"
    real = found[0]
    assert errors(name, real) == []
    broken = {k: v for k, v in {**real, **change}.items() if v is not _ABSENT}
    assert not schema_accepts(name, broken), broken


@pytest.mark.parametrize(
    ("name", "valid", "field"),
    [
        (
            "balance",
            {
                "event_id": "e-1",
                "iccid": ICCID_LOWER,
                "at": "2026-04-01T00:00:00+08:00",
                "balance": -1,
                "currency": "CNY",
            },
            "balance",
        ),
        (
            "request",
            {
                "request_id": "q-1",
                "iccid": ICCID,
                "action": "resume",
                "at": "2026-04-01T00:00:00Z",
                "requested_by": "ops",
            },
            "action",
        ),
    ],
)
def test_balance_and_request_schemas_follow_design(name: str, valid: dict[str, Any], field: str) -> None:
    assert errors(name, valid) == []
    assert schema_accepts(name, {**valid, "note": "more fields may be added"})
    for required in valid:
        assert not schema_accepts(name, {k: v for k, v in valid.items() if k != required}), required
    assert not schema_accepts(name, {**valid, field: "cancel" if field == "action" else 1.5})
    assert not schema_accepts(name, {**valid, "at": "2026-04-01T00:00:00"})
    assert not schema_accepts(name, {**valid, "iccid": "1234"})


# --- c. the input validator and the input schemas accept the same messages -------------

USAGE = _usage("r-1", ICCID, "2026-03-28T08:00:00+08:00", "2026-03-28T08:30:00+08:00", 3 * MB)
SUBSCRIPTION: dict[str, Any] = {
    "iccid": ICCID,
    "plan_id": "iot-1g",
    "quota_bytes": GB,
    "valid_from": "2026-01-01T00:00:00+08:00",
    "expires_at": "2027-01-01T00:00:00+08:00",
    "auto_suspend": True,
    "warn_at": [0.8, 0.9, 1.0],
    "timezone": "Asia/Shanghai",
    "updated_at": "2026-03-25T00:00:00+08:00",
}
BASE = {"usage": USAGE, "subscription": SUBSCRIPTION}
REQUIRED = {
    "usage": ["record_id", "iccid", "carrier", "start", "end", "bytes_up", "bytes_down"],
    "subscription": ["iccid", "plan_id", "quota_bytes", "valid_from", "updated_at"],
}
OPTIONAL = {
    "usage": [],
    "subscription": ["expires_at", "auto_suspend", "warn_at", "timezone", "pool_id", "on_quota", "addons"],
}

_DROP = object()


def _with(kind: str, **changes: object) -> dict[str, Any]:
    message = copy.deepcopy(BASE[kind])
    for name, value in changes.items():
        if value is _DROP:
            message.pop(name, None)
        else:
            message[name] = value
    return message


GOOD_TIMES = [
    "2026-03-28T08:00:00Z",
    "2026-03-28T00:00:00+08:00",
    "2026-03-27T19:00:00-05:30",
    "2026-03-28t08:00:00Z",
    "2026-03-28T08:00:00.5+08:00",
    "2026-03-28T08:00:00.123456789Z",
    "2026-03-28T08:00:00-00:00",
]
BAD_TIMES = [
    "2026-03-28T08:00:00",  # naive: no offset
    "2026-03-28",
    "2026-03-28T08:00:00+8:00",
    "2026-13-01T00:00:00Z",
    "2026-03-28T24:00:00Z",
    "2026-03-28T08:60:00Z",
    "2016-12-31T23:59:60Z",  # a leap second: RFC 3339 allows it, Python cannot hold it
    "2026-03-28T08:00:00+24:00",
    "2026-03-28T08:00:00UTC",
    "0000-01-01T00:00:00Z",
    "28/03/2026 08:00",
    "now",
    "",
    1774656000,
    None,
]
GOOD_ICCIDS = [ICCID, ICCID_LOWER, "8986001234567890123", "89860012345678ABCDEF", "89860012345678abcDef"]
BAD_ICCIDS = [
    "898600123456789012",  # 18 characters
    "898600123456789012345",  # 21 characters
    "99860012345678901234",
    "8986001234567890123G",
    "8986 0012345678901234",
    " 89860012345678901234",
    "",
    89860012345678901234,
    None,
]
GOOD_COUNTS = [0, 1, 3 * MB, 2**53]
BAD_COUNTS = [-1, 1.5, "10", True, False, None, [1]]
BAD_STRINGS = ["", 7, True, None, ["x"], {"id": "x"}]


def _cases() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(kind, case name, message): valid messages and mutations of them."""
    for kind in ("usage", "subscription"):
        yield kind, "base", _with(kind)
        yield kind, "extra_fields", _with(kind, source="feed-7", nested={"a": [1, None]})
        for name in REQUIRED[kind]:
            yield kind, f"drop_{name}", _with(kind, **{name: _DROP})
            yield kind, f"null_{name}", _with(kind, **{name: None})
        for name in OPTIONAL[kind]:
            yield kind, f"drop_{name}", _with(kind, **{name: _DROP})
            yield kind, f"null_{name}", _with(kind, **{name: None})
        for i, good_iccid in enumerate(GOOD_ICCIDS):
            yield kind, f"good_iccid_{i}", _with(kind, iccid=good_iccid)
        for i, bad_iccid in enumerate(BAD_ICCIDS):
            yield kind, f"bad_iccid_{i}", _with(kind, iccid=bad_iccid)
        for name in ("record_id", "carrier") if kind == "usage" else ("plan_id",):
            for i, value in enumerate(BAD_STRINGS):
                yield kind, f"bad_{name}_{i}", _with(kind, **{name: value})
            yield kind, f"blank_{name}", _with(kind, **{name: " "})  # non-empty: accepted
        counts = ("bytes_up", "bytes_down") if kind == "usage" else ("quota_bytes",)
        for name in counts:
            for i, value in enumerate(GOOD_COUNTS):
                yield kind, f"good_{name}_{i}", _with(kind, **{name: value})
            for i, value in enumerate(BAD_COUNTS):
                yield kind, f"bad_{name}_{i}", _with(kind, **{name: value})
        times = ("start", "end") if kind == "usage" else ("valid_from", "expires_at", "updated_at")
        for name in times:
            for i, value in enumerate(GOOD_TIMES):
                # A usage record is kept consistent: start and end move together.
                both = {"start": value, "end": value} if kind == "usage" else {name: value}
                yield kind, f"good_{name}_{i}", _with(kind, **both)
            for i, value in enumerate(BAD_TIMES):
                yield kind, f"bad_{name}_{i}", _with(kind, **{name: value})
    sub = "subscription"
    for i, value in enumerate([[0.5], [1], [0.25, 0.25], [0.001, 1.0], [1e-9]]):
        yield sub, f"good_warn_at_{i}", _with(sub, warn_at=value)
    for i, value in enumerate([[], [0], [0.0], [1.1], [-0.5], ["0.8"], [True], [None], 0.8, {"a": 1}, "0.8"]):
        yield sub, f"bad_warn_at_{i}", _with(sub, warn_at=value)
    for i, value in enumerate([False, None]):
        yield sub, f"good_auto_suspend_{i}", _with(sub, auto_suspend=value)
    for i, value in enumerate(["true", 1, 0, [], "false"]):
        yield sub, f"bad_auto_suspend_{i}", _with(sub, auto_suspend=value)
    for i, value in enumerate(
        ["UTC", "Etc/GMT-8", "America/Argentina/Buenos_Aires", "America/Port-au-Prince"]
    ):
        yield sub, f"good_timezone_{i}", _with(sub, timezone=value)
    for i, value in enumerate([8, "", "/etc/localtime", "../zoneinfo/UTC", "Asia/Shanghai ", ["UTC"]]):
        yield sub, f"bad_timezone_{i}", _with(sub, timezone=value)
    # pools, add-ons and throttling (R22, R23)
    for i, value in enumerate(["fleet-1", "a", "A.b_c:d-9", "x" * 64]):
        yield sub, f"good_pool_id_{i}", _with(sub, pool_id=value)
        yield sub, f"pooled_no_cap_{i}", _with(sub, pool_id=value, quota_bytes=None)
    for i, value in enumerate(["", "x" * 65, "fleet 1", "池", 7, ["p"]]):
        yield sub, f"bad_pool_id_{i}", _with(sub, pool_id=value)
    yield sub, "no_cap_without_pool", _with(sub, quota_bytes=None)
    for i, value in enumerate(["suspend", "notify"]):
        yield sub, f"good_on_quota_{i}", _with(sub, on_quota=value)
    yield sub, "throttle", _with(sub, on_quota="throttle", throttle_kbps=128)
    yield sub, "throttle_kbps_alone", _with(sub, throttle_kbps=64)
    for i, value in enumerate([None, 0, -1, 1.5, "128", True]):
        yield sub, f"bad_throttle_kbps_{i}", _with(sub, on_quota="throttle", throttle_kbps=value)
    for i, value in enumerate(["Throttle", "stop", "", 1, True]):
        yield sub, f"bad_on_quota_{i}", _with(sub, on_quota=value)
    pack = {"addon_id": "pack-1", "month": "2026-03", "bytes": GB}
    for i, value in enumerate([[], [pack], [pack, pack], [{**pack, "bytes": 0}], [{**pack, "note": "x"}]]):
        yield sub, f"good_addons_{i}", _with(sub, addons=value)
    bad_packs: list[Any] = [
        {**pack, "month": "2026-3"},
        {**pack, "month": "2026-13"},
        {**pack, "month": "March"},
        {**pack, "bytes": -1},
        {**pack, "bytes": 1.5},
        {**pack, "addon_id": ""},
        {k: v for k, v in pack.items() if k != "month"},
        {k: v for k, v in pack.items() if k != "bytes"},
        {k: v for k, v in pack.items() if k != "addon_id"},
        "pack-1",
        None,
    ]
    for i, value in enumerate(bad_packs):
        yield sub, f"bad_addons_{i}", _with(sub, addons=[value])
    yield sub, "addons_not_a_list", _with(sub, addons=pack)


# Cases where the validator was once more lenient or stricter than the schemas; kept as
# agreement tests so the fixes stay fixed.
FORMERLY_DISAGREEING: dict[str, dict[str, Any]] = {
    "space_separator": _with("subscription", updated_at="2026-03-25 00:00:00+08:00"),
    "time_without_seconds": _with("subscription", updated_at="2026-03-25T00:00+08:00"),
    "offset_without_colon": _with("subscription", updated_at="2026-03-25T00:00:00+0800"),
    "offset_hours_only": _with("subscription", updated_at="2026-03-25T00:00:00+08"),
    "offset_with_seconds": _with("subscription", updated_at="2026-03-25T00:00:00+08:00:30"),
    "space_before_offset": _with("subscription", updated_at="2026-03-25T00:00:00 +08:00"),
    "comma_fraction": _with("subscription", updated_at="2026-03-25T00:00:00,5Z"),
    "empty_fraction": _with("subscription", updated_at="2026-03-25T00:00:00.Z"),
    "iso_week_date": _with("subscription", updated_at="2026-W13-3T00:00:00Z"),
    "lowercase_z": _with("subscription", updated_at="2026-03-25T00:00:00z"),
    "integral_float_bytes": _with("usage", bytes_up=1.0),
    "iccid_with_ff_ligature": _with("usage", iccid="898600123456789012\ufb00"),
    "impossible_day": _with("subscription", updated_at="2026-02-30T00:00:00Z"),
}


def test_format_date_time_is_asserted() -> None:
    # jsonschema checks format "date-time" only with rfc3339-validator installed (dev extra).
    assert "date-time" in Draft202012Validator.FORMAT_CHECKER.checkers


def _kind_of(message: dict[str, Any]) -> str:
    return "usage" if "record_id" in message else "subscription"


@pytest.mark.parametrize(
    ("kind", "message"),
    [pytest.param(kind, message, id=f"{kind}-{name}") for kind, name, message in _cases()],
)
def test_validator_and_schema_agree(kind: str, message: dict[str, Any]) -> None:
    verdict = code_verdict(kind, message)
    assert verdict is not None, "a case list entry hit a rule no schema can express"
    assert schema_accepts(kind, message) is verdict, errors(kind, message)


@pytest.mark.parametrize(
    "message", [pytest.param(message, id=name) for name, message in FORMERLY_DISAGREEING.items()]
)
def test_formerly_disagreeing_cases_agree(message: dict[str, Any]) -> None:
    kind = _kind_of(message)
    assert schema_accepts(kind, message) is code_verdict(kind, message)


def test_the_case_lists_exercise_both_verdicts() -> None:
    verdicts = [code_verdict(kind, message) for kind, _, message in _cases()]
    assert verdicts.count(True) >= 30
    assert verdicts.count(False) >= 100


def test_rules_no_schema_can_express_are_the_validators_alone() -> None:
    """The schema accepts these; the validator refuses them with a code of its own."""
    end_before_start = _with("usage", start="2026-03-28T08:30:00+08:00", end="2026-03-28T08:00:00+08:00")
    unknown_zone = _with("subscription", timezone="Mars/Olympus_Mons")
    lower_case_zone = _with("subscription", timezone="asia/shanghai")
    for kind, message, code in [
        ("usage", end_before_start, "end_before_start"),
        ("subscription", unknown_zone, "bad_timezone"),
        ("subscription", lower_case_zone, "bad_timezone"),
    ]:
        assert schema_accepts(kind, message)
        with pytest.raises(InvalidInput) as caught:
            (usage_record if kind == "usage" else subscription)(message)
        assert caught.value.code == code


def test_times_outside_1970_to_9000_are_refused_by_both() -> None:
    for year in ("0001", "1969", "9001"):
        message = _with("usage", start=f"{year}-01-01T00:00:00+01:00", end=f"{year}-01-01T00:30:00+01:00")
        assert not schema_accepts("usage", message)
        with pytest.raises(InvalidInput) as caught:
            usage_record(message)
        assert caught.value.code == "bad_time"


def test_an_iccid_with_a_trailing_newline_is_rejected() -> None:
    with pytest.raises(InvalidInput):
        usage_record(_with("usage", iccid=ICCID + "\n"))


# Property test: field values drawn from pools of good and bad values, plus arbitrary JSON.

_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=25),
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
_iccids = st.one_of(
    st.sampled_from(GOOD_ICCIDS + BAD_ICCIDS),
    st.from_regex(r"\A89[0-9A-Fa-f]{16,19}\Z"),
    st.from_regex(r"\A8[0-9A-Za-z]{18,19}\Z"),
)
_strings = st.one_of(st.sampled_from(BAD_STRINGS), st.text(max_size=8))
_counts = st.one_of(
    st.sampled_from(GOOD_COUNTS + BAD_COUNTS), st.integers(min_value=-(10**12), max_value=10**15)
)
_times = st.sampled_from(GOOD_TIMES + BAD_TIMES)
_fraction_items = st.one_of(
    st.floats(min_value=-0.5, max_value=1.5, allow_nan=False).filter(
        lambda f: not f.is_integer() or f in (0, 1)
    ),
    st.sampled_from([0, 1, 2, -1, True, "0.5", None]),
)
_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "iccid": _iccids,
    "record_id": _strings,
    "carrier": _strings,
    "plan_id": _strings,
    "bytes_up": _counts,
    "bytes_down": _counts,
    "quota_bytes": _counts,
    "start": _times,
    "end": _times,
    "valid_from": _times,
    "expires_at": _times,
    "updated_at": _times,
    "warn_at": st.one_of(st.none(), st.lists(_fraction_items, max_size=4), _json_scalars),
    "auto_suspend": st.one_of(st.sampled_from([True, False, None, 0, 1, "true"]), _json_scalars),
    "timezone": st.one_of(
        st.none(),
        st.sampled_from(["UTC", "Asia/Shanghai", "Europe/Berlin", "", "/etc/localtime", "Asia/", 8]),
        _json_scalars,
    ),
    "pool_id": st.one_of(st.none(), st.sampled_from(["p-1", "", "x" * 65, "a b"]), _json_scalars),
    "on_quota": st.one_of(st.sampled_from(["suspend", "throttle", "notify", None, "stop"]), _json_scalars),
    "throttle_kbps": st.one_of(st.sampled_from([None, 1, 128, 0, -5, 1.5, "64"]), _json_scalars),
    "addons": st.one_of(
        st.none(),
        st.lists(
            st.fixed_dictionaries(
                {
                    "addon_id": _strings,
                    "month": st.sampled_from(["2026-03", "2026-3", "", 7]),
                    "bytes": _counts,
                }
            ),
            max_size=3,
        ),
        _json_scalars,
    ),
}


@st.composite
def _mutated(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    message = copy.deepcopy(BASE[kind])
    for name in REQUIRED[kind] + OPTIONAL[kind] + (["throttle_kbps"] if kind == "subscription" else []):
        action = draw(st.sampled_from(["keep", "keep", "keep", "keep", "drop", "draw", "draw", "any"]))
        if action == "drop":
            message.pop(name, None)
        elif action == "draw":
            message[name] = draw(_FIELD_VALUES[name])
        elif action == "any":
            message[name] = draw(_json)
    extra = draw(st.dictionaries(st.text(max_size=6), _json, max_size=2))
    return {**extra, **message}


@pytest.mark.parametrize("kind", ["usage", "subscription"])
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_validator_and_schema_agree(kind: str, data: st.DataObject) -> None:
    message = data.draw(_mutated(kind))
    verdict = code_verdict(kind, message)
    assume(verdict is not None)
    assert schema_accepts(kind, message) is verdict, (message, errors(kind, message))


def test_the_metrics_know_every_alert_kind() -> None:
    from stream_app.worker.metrics import ALERT_KINDS

    assert set(ALERT_KINDS) == set(schema("alert")["properties"]["kind"]["enum"])
