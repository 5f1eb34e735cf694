"""A pool's notices sent many to a message, and expanded back on the members' side."""

from __future__ import annotations

import orjson
import pytest

from stream_app.domain import InvalidInput, Output, Policy
from stream_app.domain.inputs import pool
from stream_app.domain.pools import JOIN, USAGE, Report, apply_pool, apply_report, new_pool
from stream_app.pipeline import Source, parse
from stream_app.topics import POOL_NOTICES
from stream_app.worker.batch import Incoming
from stream_app.worker.notices import MEMBERS, expanded, grouped
from stream_app.worker.routing import partition_of

from .scenario import GB, t

NOW = t("2026-03-20T12:00:00+08:00")
PARTITIONS = 4
MEMBERS_OF = [f"898600{n:014d}" for n in range(50)]


def _run_out() -> list[Output]:
    """A pool of 50 members running out, then a latecomer joining it: every output."""
    policy = Policy()
    state = new_pool("fleet-1", NOW, policy)
    definition = {
        "pool_id": "fleet-1",
        "quota_bytes": 50 * GB,
        "auto_suspend": True,
        "updated_at": "2026-03-01T00:00:00Z",
    }
    apply_pool(state, pool(definition), NOW, policy)
    outputs = []
    for iccid in MEMBERS_OF:
        outputs += apply_report(
            state, Report("fleet-1", iccid, USAGE, "2026-03", GB, f"r-{iccid}"), NOW, policy
        ).outputs
    late = "89860000000000000999"
    outputs += apply_report(
        state, Report("fleet-1", late, JOIN, "2026-03", 0, "sub-late"), NOW, policy
    ).outputs
    return outputs


def _delivered(outputs: list[Output]) -> list[Incoming]:
    """As the members' partitions would read them: each to its key's partition."""
    return [
        Incoming(
            Source("sim.pool-notices", partition_of(o.key, PARTITIONS), n),
            orjson.dumps(o.value),
            o.key.encode(),
            None,
            None,
        )
        for n, o in enumerate(outputs)
        if o.topic == POOL_NOTICES
    ]


def test_one_steps_notices_go_as_one_message_per_member_partition_and_come_back_as_they_were() -> None:
    outputs = _run_out()
    notices = [o for o in outputs if o.topic == POOL_NOTICES]
    assert len(notices) == 51
    sent = grouped(outputs, PARTITIONS, size=10)
    assert [o for o in sent if o.topic != POOL_NOTICES] == [o for o in outputs if o.topic != POOL_NOTICES]
    groups = [o for o in sent if o.topic == POOL_NOTICES and MEMBERS in o.value]
    assert len(groups) < 20 and all(len(g.value[MEMBERS]) <= 10 for g in groups)
    for group in groups:  # all of a group's members live where its key sends it
        assert {partition_of(i, PARTITIONS) for i in group.value[MEMBERS]} == {
            partition_of(group.key, PARTITIONS)
        }
    # the latecomer's own notice (another cause) goes alone, as before
    assert [o.value["cause"] for o in sent if o.topic == POOL_NOTICES and MEMBERS not in o.value] == [
        "sub-late"
    ]

    received = [i for part in expanded(_delivered(sent), PARTITIONS, size=7) for i in part]
    assert sorted((i.key, orjson.loads(i.raw or b"")["cause"]) for i in received) == sorted(
        (o.key.encode(), o.value["cause"]) for o in notices
    )
    by_member = {i.key: orjson.loads(i.raw or b"") for i in received}
    assert all(by_member[o.key.encode()] == o.value for o in notices)  # the very notices the pool decided
    for incoming in received:
        assert parse(POOL_NOTICES, incoming.raw, 65536, incoming.key).iccid == (incoming.key or b"").decode()


def test_expanded_notices_come_in_parts_of_at_most_the_given_size() -> None:
    parts = list(expanded(_delivered(grouped(_run_out(), PARTITIONS)), PARTITIONS, size=7))
    assert sum(len(p) for p in parts) == 51 and max(len(p) for p in parts) <= 7


def test_a_member_in_a_group_sent_to_another_partition_is_refused_not_applied_there() -> None:
    stray = next(i for i in MEMBERS_OF if partition_of(i, PARTITIONS) != 0)
    value = {"pool_id": "fleet-1", "action": "exhausted", MEMBERS: [MEMBERS_OF[0], stray]}
    group = Incoming(
        Source("sim.pool-notices", 0, 5), orjson.dumps(value), MEMBERS_OF[0].encode(), None, None
    )
    (part,) = expanded([group], PARTITIONS, size=100)
    assert [i.key for i in part][1] == b""  # the pipeline dead-letters it as key_mismatch
    with pytest.raises(InvalidInput, match="Kafka key"):
        parse(POOL_NOTICES, part[1].raw, 65536, part[1].key)


def test_a_group_that_is_not_a_valid_notice_is_left_to_the_pipeline_to_refuse() -> None:
    value = {"pool_id": "fleet-1", "action": "vanished", "month": "2026-03", MEMBERS: MEMBERS_OF[:1]}
    group = Incoming(
        Source("sim.pool-notices", partition_of(MEMBERS_OF[0], PARTITIONS), 5),
        orjson.dumps(value),
        MEMBERS_OF[0].encode(),
        None,
        None,
    )
    ((member,),) = expanded([group], PARTITIONS, size=100)
    assert member.key == MEMBERS_OF[0].encode()
    with pytest.raises(InvalidInput):
        parse(POOL_NOTICES, member.raw, 65536, member.key)


def test_a_message_that_is_not_a_group_passes_as_it_is() -> None:
    odd = [
        Incoming(Source("sim.pool-notices", 0, n), raw, b"x", None, None)
        for n, raw in enumerate([b"not json", b'{"iccids": "no list"}', b'["iccids"]', None])
    ]
    assert list(expanded(odd, PARTITIONS, size=100)) == [odd]
