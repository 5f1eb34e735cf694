"""GET /sims without a broker: the query, a worker's own page, the peers' pages merged
(one down: a partial answer), and `stream-app sims` rendering what it gets."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from yarl import URL

from stream_app import codec
from stream_app.domain import Policy, SimState, apply_subscription, apply_usage, new_state, subscription
from stream_app.domain import usage_record as record
from stream_app.ops import simsview
from stream_app.ops.listing import BadQuery, group_answer, local_answer, parse_query
from stream_app.settings import Settings
from stream_app.simindex import SimIndex
from stream_app.worker.ownership import Books

from .scenario import GB, subscription_msg, t, usage_msg

NOW = t("2026-03-20T12:00:00+08:00")
OWN, UP, DOWN = "http://worker-1:6066", "http://worker-2:6066", "http://worker-3:6066"


def iccid(n: int) -> str:
    return f"8986{n:016d}"


def _sim(n: int, policy: Policy, over_quota: bool, **plan: Any) -> SimState:
    state = new_state(iccid(n), NOW, policy)
    apply_subscription(state, subscription(subscription_msg(iccid=iccid(n), quota=GB, **plan)), NOW, policy)
    if over_quota:
        apply_usage(
            state, record(usage_msg("2026-03-20T11:00:00+08:00", 2 * GB, iccid=iccid(n))), NOW, policy
        )
    return state


class Peers:
    """Faust's aiohttp client as the listing uses it: each peer answers or fails."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[tuple[URL, dict[str, str]]] = []

    @asynccontextmanager
    async def get(self, url: URL, headers: dict[str, str], timeout: Any) -> AsyncIterator[Any]:
        self.asked.append((url, headers))
        answer = self.answers[f"{url.scheme}://{url.host}:{url.port}"]
        if isinstance(answer, Exception):
            raise answer
        after = url.query.get("after", "")
        answer = {**answer, "sims": [s for s in answer["sims"] if s["iccid"] > after]}

        async def read() -> bytes:
            return orjson.dumps(answer)

        yield SimpleNamespace(status=200, read=read)


class Worker:
    """A worker owning partitions 0 and 1 of 4, with SIMs 0-5 (0 and 1 in partition 0)."""

    def __init__(self, peers: Peers, ready: bool = True) -> None:
        self.policy = Policy()
        self.settings = Settings.from_env({"STREAM_APP_PARTITIONS": "4"})
        self.books = Books(self.policy)
        self.ready = ready
        entries: dict[bytes, bytes] = {}
        cards: dict[int, list[codec.Card]] = {0: [], 1: []}
        for n in range(6):
            pooled = {"pool_id": "fleet-1"} if n == 4 else {}
            state = _sim(n, self.policy, over_quota=n % 2 == 0, **pooled)
            card_entry = codec.sim_entries(codec.stored_of(state, self.policy))[-1]
            assert card_entry[1] is not None
            entries[card_entry[0]] = card_entry[1]
            cards[n // 3].append(codec.read_card(state.iccid, card_entry[1], self.policy))
        for partition, built in cards.items():
            self.books.build(partition, built)
        self.table = SimpleNamespace(name="sims", data=entries)
        self.app = SimpleNamespace(
            conf=SimpleNamespace(canonical_url=URL(OWN)),
            router=SimpleNamespace(
                table_metadata=lambda name: {
                    OWN: {"sims-changelog": [0, 1]},
                    UP: {"sims-changelog": [2]},
                    DOWN: {"sims-changelog": [3]},
                    "http://idle:6066": {"sims-changelog": []},
                }
            ),
            http_client=peers,
        )

    async def indexes(self) -> dict[int, SimIndex] | None:
        return {p: b.index for p, b in self.books.partitions.items()} if self.ready else None


def test_the_query_is_checked_whole() -> None:
    query = parse_query(
        [("status", "suspended"), ("reason", "quota,arrears"), ("limit", "2"), ("after", "8986ab")]
    )
    assert (query.after, query.limit, query.local) == ("8986AB", 2, False)
    assert query.want.groups == (
        frozenset({"status:suspended"}),
        frozenset({"reason:quota", "reason:arrears"}),
    )
    assert parse_query([("throttled", "false"), ("pending", "true")]).want.none_of == {"throttled"}
    assert parse_query([("scope", "local")]).local
    for pairs, code in (
        ([("reasons", "quota")], "unknown_parameter"),
        ([("status", "stopped")], "bad_status"),
        ([("reason", "quota"), ("reason", "manual")], "repeated_parameter"),
        ([("pool", "no spaces")], "bad_pool_id"),
        ([("throttled", "yes")], "bad_throttled"),
        ([("pending", "billing")], "bad_pending"),
        ([("limit", "0")], "bad_limit"),
        ([("limit", "10001")], "bad_limit"),
        ([("limit", "ten")], "bad_limit"),
        ([("scope", "world")], "bad_scope"),
    ):
        with pytest.raises(BadQuery) as error:
            parse_query(pairs)
        assert error.value.code == code, pairs


async def test_a_worker_answers_for_its_own_partitions_from_their_cards() -> None:
    worker = Worker(Peers({}))
    answer = await local_answer(worker, parse_query([("status", "suspended")]))
    assert answer["partitions"] == [0, 1] and answer["next"] is None
    assert answer["sims"] == [
        {
            "iccid": iccid(n),
            "status": "suspended",
            "reasons": ["quota"],
            "throttled": False,
            "pending": [],
            "pool_id": "fleet-1" if n == 4 else None,
        }
        for n in (0, 2, 4)
    ]
    page = await local_answer(worker, parse_query([("limit", "2"), ("after", iccid(0))]))
    assert ([s["iccid"] for s in page["sims"]], page["next"]) == ([iccid(1), iccid(2)], iccid(2))
    pooled = await local_answer(worker, parse_query([("pool", "fleet-1")]))
    assert [s["iccid"] for s in pooled["sims"]] == [iccid(4)]
    assert await local_answer(Worker(Peers({}), ready=False), parse_query([])) == {
        "sims": [],
        "next": None,
        "partitions": [],
    }


async def test_the_worker_asked_merges_its_peers_pages_and_names_the_partitions_missing() -> None:
    peer_sims = [
        {"iccid": iccid(n), "status": "suspended", "reasons": ["quota"], "throttled": False, "pending": []}
        for n in (1, 7)
    ]
    peers = Peers({UP: {"sims": peer_sims, "next": None, "partitions": [2]}, DOWN: ConnectionRefusedError()})
    worker = Worker(peers)
    answer = await group_answer(worker, parse_query([("status", "suspended"), ("limit", "3")]), "Bearer x")
    assert [s["iccid"] for s in answer["sims"]] == [iccid(0), iccid(1), iccid(2)]
    assert (answer["next"], answer["partial"]) == (iccid(2), [3])
    asked = {
        (f"{url.host}:{url.port}", url.path, url.query.get("scope"), h["Authorization"])
        for url, h in peers.asked
    }
    # only the peers that own partitions, each for its own only; never this worker itself
    assert asked == {
        ("worker-2:6066", "/sims", "local", "Bearer x"),
        ("worker-3:6066", "/sims", "local", "Bearer x"),
    }
    assert all(url.query["status"] == "suspended" and url.query["limit"] == "3" for url, _ in peers.asked)

    following = await group_answer(worker, parse_query([("status", "suspended"), ("after", iccid(2))]), None)
    assert [s["iccid"] for s in following["sims"]] == [iccid(4), iccid(7)]
    assert (following["next"], following["partial"]) == (None, [3])


def _fetcher(pages: dict[str, dict[str, Any]], asked: list[dict[str, str]]) -> simsview.Fetch:
    def fetch(params: dict[str, str]) -> dict[str, Any]:
        asked.append(params)
        return pages[params["after"]]

    return fetch


SIM_A = {"iccid": iccid(1), "status": "suspended", "reasons": ["quota"], "throttled": False, "pending": []}
SIM_B = {
    "iccid": iccid(2),
    "status": "active",
    "reasons": [],
    "throttled": True,
    "pending": ["throttling"],
    "pool_id": "fleet-1",
}
PAGES: dict[str, dict[str, Any]] = {
    "": {"sims": [SIM_A], "next": iccid(1), "partial": []},
    iccid(1): {"sims": [], "next": iccid(1) + "9", "partial": [3]},  # a short page: follow on
    iccid(1) + "9": {"sims": [SIM_B], "next": None, "partial": []},
}


def test_a_person_gets_a_table_and_a_count_and_is_told_what_is_missing() -> None:
    out, err = io.StringIO(), io.StringIO()
    asked: list[dict[str, str]] = []
    status = simsview.run(_fetcher(PAGES, asked), {"status": "suspended"}, 100, False, out, err)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["ICCID", "STATUS", "REASONS", "POOL", "NOTES"]
    assert lines[1].split() == [iccid(1), "suspended", "quota", "-", "-"]
    assert lines[2].split() == [iccid(2), "active", "-", "fleet-1", "throttled,", "pending", "throttling"]
    assert lines[3] == "2 SIMs (status suspended)"
    assert err.getvalue() == "incomplete: partitions 3 did not answer (their worker is down or rebalancing)\n"
    assert status == simsview.PARTIAL
    assert [a["limit"] for a in asked] == ["100", "99", "99"]


def test_a_limit_stops_the_walk_and_says_where_to_go_on_and_json_is_for_scripts() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert simsview.run(_fetcher(PAGES, []), {}, 1, False, out, err) == 0
    assert out.getvalue().splitlines()[-1] == f"1 SIM; more after {iccid(1)} (--after {iccid(1)}, or --all)"
    out, err = io.StringIO(), io.StringIO()
    asked: list[dict[str, str]] = []
    assert simsview.run(_fetcher(PAGES, asked), {"reason": "quota"}, None, True, out, err) == simsview.PARTIAL
    assert [orjson.loads(line) for line in out.getvalue().splitlines()] == [SIM_A, SIM_B]
    assert err.getvalue().splitlines()[0] == "2 SIMs (reason quota)"
    assert {a["limit"] for a in asked} == {str(simsview.PAGE)}
