"""`make bench-hotpath`: the worker's own CPU per usage record in the steady state,
without a broker, stage by stage, against a baseline measured in the same run.

The SIMs are the bench's steady-state fleet (fleet.py: the middle of a month, 672
remembered ids each) in a dict standing in for the table (the memory store). Each SIM
gets a few records first, so that its tiers sit where a running fleet's do rather than
at the edge the preload leaves them; then one record per SIM per round, in chunks of
1,000 (what one poll brings), which is how live traffic arrives. Printed per record:

- ``baseline``: ``orjson.loads`` and a dict sum, the raw consumer's own work per record;
- ``parse``: decoding and validating a record (``pipeline.parse``);
- ``load``: reading a SIM's card and id memory (``codec.load_sim``);
- ``decide``: a whole chunk decided (``batch.decide_batch``: parse, load, fast lane);
- ``store``: what the decided SIMs write (``codec.sim_entries``);
- ``worker``: decide and store, the worker's Python per record without Kafka and Faust.

Each stage but ``worker`` (which stores, so runs once) is the least of three runs.

Not a test: nothing here asserts a speed. ``--profile FILE`` writes a cProfile of the
worker stage.

    python bench/hotpath.py [--sims 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet import EVERY, WORKER_NOW, steady_fleet, usage_records  # noqa: E402

from stream_app import codec, collector  # noqa: E402
from stream_app.codec import Stored  # noqa: E402
from stream_app.domain import Policy  # noqa: E402
from stream_app.pipeline import Source, parse  # noqa: E402
from stream_app.worker.batch import Incoming, decide_batch  # noqa: E402

CHUNK = 1000
MAX_BYTES = 64 * 1024
WARM_ROUNDS = 5
"""Records per SIM before measuring: a preloaded SIM's recent tier is full, so its first
record always moves it to the middle tier (one in 16 in a running fleet)."""


def per_record(seconds: float, records: int) -> float:
    return seconds / records * 1e6


def timed(run: Callable[[], object], repeat: int = 3) -> float:
    """The least of ``repeat`` runs: the noise of a shared machine only ever adds."""
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return best


class Fleet:
    """The steady-state SIMs in a dict (the memory store), warmed up, and the records to measure."""

    def __init__(self, sims: int, rounds: int, policy: Policy) -> None:
        self.policy = policy
        everything = WARM_ROUNDS + rounds
        first = WORKER_NOW - EVERY * (everything + 1)
        self.table: dict[bytes, bytes] = {}
        for key, value, _partition in steady_fleet(sims, 672, first, policy):
            if value is not None:
                self.table[key] = value
        records = [
            Incoming(Source("sim.usage", 0, n), message, iccid.encode(), None, None)
            for n, (iccid, message) in enumerate(
                usage_records(sims * everything, sims, first + EVERY, duplicate_share=0.01)
            )
        ]
        warm = sims * WARM_ROUNDS
        for n in range(0, warm, CHUNK):
            self.decide_and_store(records[n : min(n + CHUNK, warm)])
        self.measured = records[warm:]

    def load(self, iccid: str) -> Stored | None:
        return codec.load_sim(iccid, self.table.get, self.policy)

    def decide(self, batch: list[Incoming]) -> list[Stored]:
        _invalid, sims = decide_batch("usage", batch, self.load, WORKER_NOW, self.policy, MAX_BYTES)
        return [sim.state for sim in sims if sim.state is not None]

    def decide_and_store(self, batch: list[Incoming]) -> None:
        for stored in self.decide(batch):
            for key, value in codec.sim_entries(stored):
                if value is None:
                    self.table.pop(key, None)
                else:
                    self.table[key] = value

    def chunks(self) -> Iterator[list[Incoming]]:
        for n in range(0, len(self.measured), CHUNK):
            yield self.measured[n : n + CHUNK]

    # --- the stages; results are dropped as they go, as the worker's are ---------------

    def baseline(self) -> None:
        totals: dict[str, int] = defaultdict(int)
        for incoming in self.measured:
            value = orjson.loads(incoming.raw or b"")
            totals[value["iccid"]] += value["bytes_up"] + value["bytes_down"]

    def parse(self) -> None:
        for incoming in self.measured:
            parse("usage", incoming.raw, MAX_BYTES, incoming.key)

    def load_all(self) -> None:
        for incoming in self.measured:
            self.load((incoming.key or b"").decode())

    def decide_all(self) -> None:
        for batch in self.chunks():
            self.decide(batch)

    def worker(self) -> None:
        for batch in self.chunks():
            self.decide_and_store(batch)


def main() -> None:
    collector.tune()  # as the worker runs
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sims", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", help="write a cProfile of the worker stage to this file")
    args = parser.parse_args()
    fleet = Fleet(args.sims, args.rounds, Policy())
    figures = {
        "baseline": timed(fleet.baseline),
        "parse": timed(fleet.parse),
        "load": timed(fleet.load_all),
        "decide": timed(fleet.decide_all),
    }
    decided = [stored for batch in fleet.chunks() for stored in fleet.decide(batch)]
    figures["store"] = timed(lambda: [codec.sim_entries(stored) for stored in decided])
    decided.clear()
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    figures["worker"] = timed(fleet.worker, repeat=1)  # it stores: a second run would see repeats
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)

    count = len(fleet.measured)
    base = per_record(figures["baseline"], count)
    print(f"{count:,} records over {args.sims:,} steady-state SIMs (672 ids each), chunks of {CHUNK:,}")
    print(f"{'stage':<10}{'µs/record':>12}{'x baseline':>13}")
    for name, seconds in figures.items():
        micros = per_record(seconds, count)
        print(f"{name:<10}{micros:>12.1f}{micros / base:>13.1f}")
    print(f"worker bound on one core: {1e6 / per_record(figures['worker'], count):,.0f} records/s")


if __name__ == "__main__":
    main()
