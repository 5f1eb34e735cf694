"""schemas/ against the code: the schemas are valid, describe every output the engine
emits, and accept exactly the inputs that stream_app.domain.inputs accepts.

Where the two cannot agree by construction, the case is named and explained here
instead of being left out silently:

* Cross-field and database rules a JSON Schema cannot express are excluded from the
  agreement checks: ``end_before_start`` (end compared with start), ``bad_timezone``
  (whether a well-formed name is in the worker's IANA database) and ``bad_time`` for a
  well-formed time whose UTC conversion leaves the datetime range (year 1 with a
  positive offset).
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
from stream_app.replay import replay_lines
from stream_app.settings import Settings

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_BASE = "https://stream-app.local/schemas/"

# logical topic (topics.py) -> schema file stem
SCHEMA_OF_TOPIC = {
    topics.USAGE: "usage",
    topics.SUBSCRIPTIONS: "subscription",
    topics.BILLING: "balance",
    topics.REQUESTS: "request",
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


def _scenario() -> tuple[list[bytes], list[tuple[str, dict[str, Any], bool]]]:
    """Replay lines, and the messages in them with their topic's schema and validity."""
    sub_a = {
        "iccid": ICCID,
        "plan_id": "iot-1g",
        "quota_bytes": 1 * GB,
        "valid_from": "2026-01-01T00:00:00+08:00",
        "expires_at": "2027-01-01T00:00:00+08:00",
        "auto_suspend": True,
        "timezone": "Asia/Shanghai",
        "updated_at": "2026-03-25T00:00:00+08:00",
        "crm_ref": "C-1",  # more fields may be added
    }
    sub_b = {
        "iccid": ICCID_LOWER,
        "plan_id": "iot-1g",
        "quota_bytes": 1 * GB,
        "valid_from": "2026-01-01T00:00:00+08:00",
        "expires_at": None,
        "auto_suspend": False,
        "warn_at": [0.5, 1.0],
        "updated_at": "2026-03-25T00:00:01+08:00",
    }
    a2 = _usage("a-2", ICCID, "2026-03-29T10:00:00+08:00", "2026-03-29T10:30:00+08:00", 450 * MB)
    negative = _usage("a-x", ICCID, "2026-03-30T12:00:00+08:00", "2026-03-30T12:10:00+08:00", MB)
    negative["bytes_up"] = -5
    missing = _usage("a-y", ICCID, "2026-03-30T12:00:00+08:00", "2026-03-30T12:10:00+08:00", MB)
    del missing["carrier"]
    balance = {
        "event_id": "bal-1",
        "iccid": ICCID_LOWER,
        "at": "2026-03-31T12:00:00+08:00",
        "balance": -120,
        "currency": "CNY",
    }
    request = {
        "request_id": "req-1",
        "iccid": ICCID,
        "action": "suspend",
        "at": "2026-04-01T09:00:00+08:00",
        "requested_by": "ops@example.com",
    }
    messages: list[tuple[str, dict[str, Any], bool]] = []
    lines: list[bytes] = []

    def add(topic: str, value: dict[str, Any], valid: bool = True) -> None:
        logical = {v: k for k, v in Settings.from_env({}).topic_names.items()}[topic]
        messages.append((SCHEMA_OF_TOPIC[logical], value, valid))
        lines.append(_line(topic, value))

    add("sim.subscriptions", sub_a)
    add("sim.subscriptions", sub_b)
    add("sim.usage", _usage("a-1", ICCID, "2026-03-28T08:00:00+08:00", "2026-03-28T08:30:00+08:00", 500 * MB))
    add(
        "sim.usage", _usage("b-1", ICCID_LOWER, "2026-03-28T09:00:00+08:00", "2026-03-28T09:40:00Z", 900 * MB)
    )
    add("sim.usage", a2)  # 95 %: crosses 80 % and 90 % at once, and forecasts exhaustion
    add("sim.usage", a2)  # duplicate: counted once
    add("sim.usage", _usage("a-3", ICCID, "2026-03-30T10:00:00+08:00", "2026-03-30T10:20:00+08:00", 100 * MB))
    add("sim.usage", _usage("u-1", UNKNOWN, "2026-03-30T11:00:00+08:00", "2026-03-30T11:05:00+08:00", MB))
    lines.append(b'{"topic": "sim.usage", "value": {"record_id": ')  # not JSON
    add(
        "sim.usage",
        _usage("a-z", "8986-0012", "2026-03-30T12:00:00+08:00", "2026-03-30T12:10:00+08:00", 1),
        False,
    )
    add("sim.usage", negative, False)
    add("sim.usage", missing, False)
    add("sim.billing", balance)
    lines.append(orjson.dumps({"tick": "2026-04-01T00:00:30+08:00"}))  # month start: quota cleared
    # Late record for March (start within the dedupe horizon) pushing B past its quota.
    add(
        "sim.usage",
        _usage("b-2", ICCID_LOWER, "2026-03-31T23:00:00+08:00", "2026-03-31T23:30:00+08:00", 200 * MB),
    )
    # Older than the dedupe horizon: valid, but dead-lettered for reconciliation.
    add("sim.usage", _usage("a-0", ICCID, "2026-03-20T10:00:00+08:00", "2026-03-20T10:20:00+08:00", MB))
    add("sim.requests", request)
    lines.append(_line("sim.nope", {}))
    lines.append(orjson.dumps({"tick": "2026-04-02T00:00:00+08:00"}))
    return lines, messages


def _replay() -> list[dict[str, Any]]:
    lines, _ = _scenario()
    return [orjson.loads(out) for out in replay_lines(Settings.from_env({}), lines)]


def test_scenario_inputs_match_their_schemas_as_intended() -> None:
    _, messages = _scenario()
    for name, message, valid in messages:
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
        if name != "deadletter":
            assert output["key"] == output["value"]["iccid"]  # every topic is keyed by ICCID


def test_the_replay_covers_every_output_kind_the_engine_emits() -> None:
    """Guards the test above against passing vacuously when the scenario stops producing."""
    outputs = _replay()

    def values(topic: str) -> list[dict[str, Any]]:
        return [o["value"] for o in outputs if o["topic"] == topic]

    commands = {(c["action"], c["reason"], c["trigger"]) for c in values("sim.commands")}
    assert {("suspend", "quota", "usage"), ("restore", "quota", "month_start")} <= commands
    kinds = [a["kind"] for a in values("sim.alerts")]
    assert {"quota_threshold", "quota_forecast", "unknown_sim", "late_usage"} <= set(kinds)
    thresholds = [a["threshold"] for a in values("sim.alerts") if a["kind"] == "quota_threshold"]
    assert thresholds.count(0.8) == 1  # the duplicate record did not fire anything twice
    assert {(a["change"], a["reason"]) for a in values("sim.audit")} == {
        ("reason_added", "quota"),
        ("reason_cleared", "quota"),
    }
    errors_seen = {d["error"] for d in values("sim.deadletter")}
    assert {
        "invalid_json",
        "bad_iccid",
        "negative_bytes",
        "missing_field",
        "beyond_dedupe_horizon",
        "unknown_topic",
    } <= errors_seen


def test_hand_built_charge_from_design_matches_its_schema() -> None:
    """The engine emits no charges yet (R11); the schema is written from DESIGN.md."""
    charge = {
        "charge_id": "0123456789abcdef0123456789abcdef",
        "iccid": ICCID,
        "month": "2026-04",
        "amount": 500,
        "currency": "CNY",
        "kind": "number_retention",
    }
    assert errors("charge", charge) == []
    for broken in ({**charge, "amount": 5.5}, {**charge, "kind": "late_fee"}, {**charge, "month": "2026-4"}):
        assert not schema_accepts("charge", broken)


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
OPTIONAL = {"usage": [], "subscription": ["expires_at", "auto_suspend", "warn_at", "timezone"]}

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
    # Well-formed, but before year 1 once converted to UTC.
    out_of_range = _with("usage", start="0001-01-01T00:00:00+01:00", end="0001-01-01T00:30:00+01:00")
    for kind, message, code in [
        ("usage", end_before_start, "end_before_start"),
        ("subscription", unknown_zone, "bad_timezone"),
        ("subscription", lower_case_zone, "bad_timezone"),
        ("usage", out_of_range, "bad_time"),
    ]:
        assert schema_accepts(kind, message)
        with pytest.raises(InvalidInput) as caught:
            (usage_record if kind == "usage" else subscription)(message)
        assert caught.value.code == code


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
}


@st.composite
def _mutated(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    message = copy.deepcopy(BASE[kind])
    for name in REQUIRED[kind] + OPTIONAL[kind]:
        action = draw(st.sampled_from(["keep", "keep", "keep", "keep", "drop", "draw", "draw", "any"]))
        if action == "drop":
            del message[name]
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
