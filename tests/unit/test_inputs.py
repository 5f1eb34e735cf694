"""A usage record plainly right is taken at once; the quick way and the careful way agree
on every record, good or bad (domain/inputs.py usage_record)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.domain.inputs import InvalidInput, _usage_record, usage_record

GOOD = {
    "record_id": "r-1",
    "iccid": "89860012345678901234",
    "carrier": "cmcc",
    "start": "2026-03-28T08:00:00+08:00",
    "end": "2026-03-28T08:30:00Z",
    "bytes_up": 1000,
    "bytes_down": 2000,
}
VALUES: dict[str, list[Any]] = {
    "record_id": ["r-2", "", 7, None, True, " "],
    "iccid": ["898602b9201650109563", "898602B9201650109563", "8986", "89860012345678901234\u00e9", 8, None],
    "carrier": ["ctcc", "", None, 1],
    "start": [
        "2026-03-28T00:30:00Z",
        "2026-03-28T08:00:00",
        "2026-03-28t08:00:00z",
        "2026-02-30T00:00:00Z",
        0,
        None,
    ],
    "end": ["2026-03-27T00:00:00Z", "2026-03-28T09:00:00.123+08:00", "1969-12-31T23:59:59Z", "later", None],
    "bytes_up": [0, -1, 1.0, 1.5, 2**53, 2**53 + 1, True, "9", None],
    "bytes_down": [0, -5, 3.0, False, 2**60, None],
}


def _outcome(check: Any, obj: dict[str, Any]) -> Any:
    try:
        return check(obj)
    except InvalidInput as exc:
        return (exc.code, exc.detail)


@settings(max_examples=500, deadline=None)
@given(
    st.fixed_dictionaries({name: st.sampled_from([GOOD[name], *values]) for name, values in VALUES.items()}),
    st.sets(st.sampled_from(sorted(GOOD))),
)
def test_the_quick_and_the_careful_way_agree(changed: dict[str, Any], dropped: set[str]) -> None:
    obj = {k: v for k, v in changed.items() if k not in dropped}
    assert _outcome(usage_record, obj) == _outcome(_usage_record, obj)


def test_a_plain_record_is_taken_and_a_bad_one_named() -> None:
    record = usage_record(GOOD)
    assert (record.iccid, record.total_bytes, record.end.isoformat()) == (
        GOOD["iccid"],
        3000,
        "2026-03-28T08:30:00+00:00",
    )
    assert _outcome(usage_record, {**GOOD, "bytes_up": -1})[0] == "negative_bytes"


def test_an_end_before_the_start_is_named_whichever_way() -> None:
    earlier = {**GOOD, "end": "2026-03-27T00:00:00Z"}
    assert _outcome(usage_record, earlier) == _outcome(_usage_record, earlier)
    assert _outcome(usage_record, earlier)[0] == "end_before_start"
