"""Listing SIMs (GET /sims) over a million SIMs: page latency, full walks, and what the
index costs in resident memory and book-building time.

A realistic fleet is written straight into the table's changelog (what workers would
have written): most SIMs active, some suspended for each reason, some throttled, a fifth
in pools of 1,000. A worker with the index turned off gives the baseline (memory, books
built); then a worker with it is queried. Latencies are printed next to the same
worker's `GET /healthz` and `GET /sims/{iccid}` measured in the same run. With --peers,
a second worker joins the group and the first gathers from it. Not a test: nothing
here asserts a speed.

    python bench/listing.py [--sims 1000000] [--store memory://] [--peers]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka.partitioner import DefaultPartitioner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet import PARTITIONS  # noqa: E402 - the main bench's modules (bench.py)
from kafka import produce  # noqa: E402
from workers import (  # noqa: E402
    STARTED,
    WORKER,
    Worker,
    bench_env,
    own_broker,
    run_script,
    settled_rss,
    stop_started,
    wait_books,
)

from stream_app import codec  # noqa: E402
from stream_app.domain import Policy, SimState, copy_state, new_state  # noqa: E402
from stream_app.domain.engine import apply_input, apply_tick  # noqa: E402
from stream_app.domain.timeutil import format_time, parse_time  # noqa: E402
from stream_app.pipeline import validate  # noqa: E402
from stream_app.settings import Settings  # noqa: E402
from stream_app.tools.admin import ensure_topics  # noqa: E402
from stream_app.tools.localbroker import free_port  # noqa: E402
from stream_app.worker.app import TABLE  # noqa: E402
from stream_app.worker.ownership import Books  # noqa: E402

NOW = "2026-03-20T12:00:00+08:00"
"""The middle of a month: nothing falls due while the bench runs."""
POOLS = 200
NO_INDEX = (
    "import sys; from stream_app import simindex; "
    "simindex.SimIndex.add = lambda self, iccid, keys: None; "
    "simindex.SimIndex.move = lambda self, iccid, before, after: None; "
    "from stream_app.cli import main; sys.exit(main(['worker']))"
)
"""A worker whose books keep no index (the due index and counts only): the baseline."""


def iccid(n: int) -> str:
    return f"89860{n:015d}"


def kind_of(n: int) -> str:
    """The fleet's mix, by SIM number: 5 % quota, 3 % arrears, 1 % each of expiry,
    manual, quota and arrears at once, throttled; the rest (88 %) active."""
    share = n % 100
    if share < 5:
        return "quota"
    return {5: "arrears", 6: "arrears", 7: "arrears", 8: "expiry", 9: "manual", 10: "quota+arrears"}.get(
        share, "throttled" if share == 11 else "active"
    )


def pool_of(n: int) -> str | None:
    """A fifth of the fleet, of every kind, in 200 pools of about 1,000 (per million)."""
    spread = n * 7919 % 1_000_003
    return f"pool-{spread // 5 % POOLS}" if spread % 5 == 0 else None


def templates(policy: Policy) -> dict[str, SimState]:
    now = parse_time(NOW)
    earlier = now - timedelta(days=3)

    def sim(**plan: Any) -> SimState:
        state = new_state(iccid(0), earlier, policy)
        message = {
            "iccid": iccid(0),
            "plan_id": "iot-1g",
            "quota_bytes": 10**9,
            "valid_from": "2026-01-01T00:00:00+08:00",
            "expires_at": None,
            "auto_suspend": True,
            "updated_at": format_time(earlier),
            **plan,
        }
        apply_input(state, validate("subscriptions", message), earlier, policy)
        return state

    def used(state: SimState, total: int, records: int = 10) -> SimState:
        for i in range(records):
            start = now - timedelta(hours=2) + timedelta(minutes=5 * i)
            record = {
                "record_id": f"template-{i}",
                "iccid": iccid(0),
                "carrier": "cmcc",
                "start": format_time(start),
                "end": format_time(start + timedelta(minutes=1)),
                "bytes_up": total // records // 2,
                "bytes_down": total // records - total // records // 2,
            }
            apply_input(state, validate("usage", record), now, policy)
        return state

    def balance(state: SimState) -> SimState:
        event = {
            "event_id": "b1",
            "iccid": iccid(0),
            "at": format_time(now),
            "balance": -100,
            "currency": "CNY",
        }
        apply_input(state, validate("billing", event), now, policy)
        return state

    manual = sim()
    request = {"request_id": "q1", "iccid": iccid(0), "action": "suspend", "at": NOW, "requested_by": "noc"}
    apply_input(manual, validate("requests", request), now, policy)
    expired = sim(expires_at=format_time(now - timedelta(days=1)))
    apply_tick(expired, now, policy)
    made = {
        "active": used(sim(), 200_000),
        "quota": used(sim(), 2 * 10**9),
        "arrears": balance(used(sim(), 200_000)),
        "expiry": expired,
        "manual": manual,
        "quota+arrears": balance(used(sim(), 2 * 10**9)),
        "throttled": used(sim(on_quota="throttle", throttle_kbps=128), 2 * 10**9),
    }
    expected = {
        "active": "active",
        "quota": "quota",
        "arrears": "arrears",
        "expiry": "expiry",
        "manual": "manual",
        "quota+arrears": "arrears,quota",
        "throttled": "active",
    }
    for kind, state in made.items():
        shown = state.status if state.status == "active" else ",".join(sorted(state.reasons))
        assert shown == expected[kind], (kind, shown)
    return made


def fleet(
    sims: int, policy: Policy, cards: dict[int, list[tuple[str, bytes]]]
) -> Iterator[tuple[bytes, bytes | None, int]]:
    """Every SIM's table entries, each with the partition its key hashes to; ``cards``
    collects each SIM's card, per partition."""
    made = templates(policy)
    everyone = list(range(PARTITIONS))
    pick = DefaultPartitioner()
    for n in range(sims):
        template = made[kind_of(n)]
        assert template.subscription is not None
        state = copy_state(template)
        state.iccid = iccid(n)
        state.subscription = replace(template.subscription, iccid=state.iccid, pool_id=pool_of(n))
        stored = codec.stored_of(state, policy)
        partition = pick(state.iccid.encode(), everyone, everyone)
        stored.hot.partition = partition
        for key, value in codec.sim_entries(stored):
            if value is not None and codec.is_card_key(key):
                cards.setdefault(partition, []).append((state.iccid, value))
            yield key, value, partition


def get(port: int, path: str) -> tuple[int, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=120) as response:
        return response.status, orjson.loads(response.read())


def timed(port: int, path: str, times: int) -> tuple[float, float, Any]:
    """Median and worst seconds of ``times`` GETs, and the last body."""
    spent = []
    body = None
    for _ in range(times):
        began = time.perf_counter()
        _status, body = get(port, path)
        spent.append(time.perf_counter() - began)
    return statistics.median(spent), max(spent), body


def full_walk(port: int, limit: int, **filters: str) -> tuple[float, int, int, list[int]]:
    """Seconds, SIMs, pages and partitions missing of a walk to the end."""
    after: str | None = ""
    sims = pages = 0
    partial: set[int] = set()
    began = time.perf_counter()
    while after is not None:
        query = urllib.parse.urlencode({**filters, "limit": limit, "after": after})
        _status, body = get(port, f"/sims?{query}")
        sims += len(body["sims"])
        partial.update(body["partial"])
        pages += 1
        after = body["next"]
    return time.perf_counter() - began, sims, pages, sorted(partial)


def expected(sims: int) -> dict[str, int]:
    kinds = [kind_of(n) for n in range(sims)]
    return {
        "suspended": sum(k not in ("active", "throttled") for k in kinds),
        "quota": sum(k in ("quota", "quota+arrears") for k in kinds),
    }


def build_cost(raw: dict[int, list[tuple[str, bytes]]], policy: Policy) -> tuple[float, float]:
    """Seconds to build the books from every card, without and with the index, in this process."""
    cards = {
        p: [codec.read_card(iccid, value, policy) for iccid, value in listed] for p, listed in raw.items()
    }
    spent = []
    for indexed in (False, True):
        books = Books(policy)
        began = time.perf_counter()
        for partition, listed in cards.items():
            book = (
                books.build(partition, listed) if indexed else _build_without_index(books, partition, listed)
            )
            book.index.size("status:active")  # sorted on first use: counted here
        spent.append(time.perf_counter() - began)
    return spent[0], spent[1]


def _build_without_index(books: Books, partition: int, cards: list[codec.Card]) -> Any:
    from stream_app.worker.ownership import PartitionBook, summary

    book = PartitionBook()
    for card in cards:
        book.due.schedule(card.iccid, card.due)
        book.count(summary(card), +1)
    books.partitions[partition] = book
    return book


def listing_env(bootstrap: str, suffix: str, store: str) -> dict[str, str]:
    """The bench's worker settings, with books logged and ticks every second (the books are
    built at a worker's first tick), in the middle of a month."""
    return bench_env(
        bootstrap,
        f"listing-{suffix}",
        STREAM_APP_STORE=store,
        STREAM_APP_LOG_LEVEL="info",
        STREAM_APP_TICK_INTERVAL="1s",
        STREAM_APP_CLOCK_START=NOW,
    )


def report(results: dict[str, Any], key: str, value: Any, text: str) -> None:
    results[key] = value
    print(text, flush=True)


async def main() -> None:  # noqa: PLR0915 - one linear script, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sims", type=int, default=1_000_000)
    parser.add_argument("--store", default="memory://")
    parser.add_argument(
        "--peers", action="store_true", help="then a second worker joins: gathering over HTTP"
    )
    parser.add_argument("--output", default=str(ROOT / "bench-listing.json"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="stream-app-listing-"))
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or own_broker(workdir)
    results: dict[str, Any] = {"sims": args.sims, "store": args.store, "machine": f"{os.cpu_count()} cpus"}
    try:
        env = listing_env(bootstrap, uuid.uuid4().hex[:8], args.store)
        settings = Settings.from_env(env)
        policy = settings.policy()
        await ensure_topics(settings)
        empty = Worker(env, workdir / "empty")  # also creates the changelog topic
        empty.wait_ready()
        empty.stop()
        began = time.perf_counter()
        cards: dict[int, list[tuple[str, bytes]]] = {}
        changelog = f"{settings.app_id}-{TABLE}-changelog"
        entries = await produce(bootstrap, changelog, fleet(args.sims, policy, cards))
        print(
            f"wrote {args.sims:,} SIMs ({entries:,} entries) in {time.perf_counter() - began:.0f} s",
            flush=True,
        )
        want = expected(args.sims)

        rss = {}
        books = {}
        for indexed in (False, True):
            name = "with" if indexed else "without"
            worker = Worker(env, workdir / f"worker-{name}", WORKER if indexed else ["-c", NO_INDEX])
            ready = worker.wait_ready()
            books[name] = wait_books(worker, PARTITIONS) - ready
            rss[name] = settled_rss(worker)
            print(
                f"{name} the index: ready in {ready - worker.started:.0f} s, books built "
                f"{books[name]:.1f} s after, RSS {rss[name] / 2**20:,.0f} MiB",
                flush=True,
            )
            if not indexed:
                worker.stop()
        results["rss_mib_without_index"] = rss["without"] / 2**20
        results["rss_mib_with_index"] = rss["with"] / 2**20
        report(
            results,
            "index_bytes_per_sim",
            (rss["with"] - rss["without"]) / args.sims,
            f"index: {(rss['with'] - rss['without']) / 2**20:,.0f} MiB more "
            f"({(rss['with'] - rss['without']) / args.sims:.0f} bytes per SIM)",
        )

        port = worker.port
        health, _worst, _ = timed(port, "/healthz", 50)
        one, _worst, _ = timed(port, f"/sims/{iccid(12345)}", 50)
        report(results, "healthz_ms", health * 1000, f"GET /healthz: {health * 1000:.1f} ms (median of 50)")
        report(results, "one_sim_ms", one * 1000, f"GET /sims/{{iccid}}: {one * 1000:.1f} ms")
        pages = {
            "suspended_first_page": "/sims?status=suspended&limit=100",
            "suspended_mid_page": f"/sims?status=suspended&limit=100&after={iccid(args.sims // 2)}",
            "quota_page": "/sims?status=suspended&reason=quota&limit=100",
            "pool_page": "/sims?pool=pool-7&limit=100",
            "pool_manual_page": "/sims?pool=pool-7&reason=manual&limit=100",
            "active_page": "/sims?status=active&limit=100",
            "throttled_page": "/sims?throttled=true&limit=100",
            "not_throttled_page": "/sims?throttled=false&status=active&limit=100",
            "suspended_10000": "/sims?status=suspended&limit=10000",
        }
        for key, path in pages.items():
            median, worst, body = timed(port, path, 20)
            assert body["partial"] == [], body["partial"]
            report(
                results,
                f"{key}_ms",
                median * 1000,
                f"GET {path}: {median * 1000:.1f} ms median, {worst * 1000:.1f} worst "
                f"({len(body['sims'])} SIMs; {median / one:.1f} x one SIM)",
            )
        for key, limit, filters in (
            ("walk_suspended_1000", 1000, {"status": "suspended"}),
            ("walk_suspended_10000", 10_000, {"status": "suspended"}),
            ("walk_quota_1000", 1000, {"reason": "quota"}),
            ("walk_all_10000", 10_000, {}),
        ):
            seconds, count, walked, partial = full_walk(port, limit, **filters)
            target = want.get(filters.get("status", filters.get("reason", "")), args.sims)
            assert count == target and partial == [], (key, count, target, partial)
            report(
                results,
                f"{key}_s",
                seconds,
                f"walk {filters or 'every SIM'} by {limit:,}: {count:,} SIMs in {walked:,} pages, "
                f"{seconds:.2f} s ({count / seconds:,.0f} SIMs/s)",
            )
        results["rss_mib_after_walks"] = worker.rss() / 2**20

        if args.peers:
            env2 = {**env, "STREAM_APP_WEB_PORT": str(free_port())}
            second = Worker(env2, workdir / "worker-second")
            second.wait_ready()
            worker.wait_ready()
            wait_books(second, PARTITIONS // 2)
            deadline = time.perf_counter() + 300
            while get(port, "/sims?status=suspended&limit=1")[1]["partial"]:
                assert time.perf_counter() < deadline, "the two workers never answered together"
                time.sleep(1)
            median, worst, body = timed(port, "/sims?status=suspended&limit=100", 20)
            report(
                results,
                "two_workers_suspended_first_page_ms",
                median * 1000,
                f"two workers, GET /sims?status=suspended&limit=100: {median * 1000:.1f} ms median, "
                f"{worst * 1000:.1f} worst",
            )
            seconds, count, walked, partial = full_walk(port, 10_000, status="suspended")
            assert count == want["suspended"] and partial == [], (count, partial)
            report(
                results,
                "two_workers_walk_suspended_10000_s",
                seconds,
                f"two workers, walk suspended by 10,000: {count:,} SIMs in {walked} pages, {seconds:.2f} s",
            )
        for w in list(STARTED):
            if isinstance(w, Worker):
                w.stop()
        without, with_index = build_cost(cards, policy)
        results["books_s_without_index"], results["books_s_with_index"] = without, with_index
        print(
            f"books from {args.sims:,} cards in this process: {without:.2f} s without the index, "
            f"{with_index:.2f} s with it",
            flush=True,
        )
    finally:
        stop_started()
        shutil.rmtree(workdir, ignore_errors=True)
    Path(args.output).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    run_script(main, "listing bench")
