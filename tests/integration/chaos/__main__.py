"""The command line, ``python -m tests.integration.chaos`` (``make chaos``): the scenarios
chosen, a broker started for them, one line each and the total line, and the exit status
(see the package docstring)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream_app.tools.interrupt import cancel_on_signals
from stream_app.tools.localbroker import LocalBroker, free_port

from .. import chaos as package
from ..conftest import ROOT
from .scenario import Scenario, run_scenario
from .verdict import Result, report, summary


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    common: dict[str, Any] = {
        "records": args.records,
        "sims": args.sims,
        "partitions": args.partitions,
        "seed": args.seed,
        "guarantee": args.processing_guarantee,
        "stall_after": args.stall_after,
        "session_timeout": args.session_timeout,
        "store": args.store,
    }
    known = {
        "single": Scenario("single", kills=args.kills, **common),
        # the survivor waits out the dead member's session before it takes over
        "failover": Scenario(
            "failover", kills=args.failover_kills, workers=2, lead=45, race_join=args.race_join, **common
        ),
        "broker": Scenario(
            "broker", kills=args.broker_kills, broker_restarts=args.broker_restarts, own_broker=True, **common
        ),
    }
    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; choose from {sorted(known)}")
    return [known[name] for name in chosen]


# Every broker started, for main() to stop after the event loop is gone too: one whose
# start (on a thread) outlived an interruption writes its pid only then.
BROKERS: list[LocalBroker] = []


async def run(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    cancel_on_signals(task)  # Ctrl-C, `timeout`, kill: the finally blocks stop workers and brokers
    workdir = Path(tempfile.mkdtemp(prefix="stream-app-chaos-"))
    jars = LocalBroker(home=ROOT / ".kafka").ensure_jars()
    brokers = BROKERS
    shared = args.bootstrap

    async def new_broker(name: str) -> tuple[LocalBroker, str]:
        broker = LocalBroker(home=workdir / name, port=free_port(), controller_port=free_port(), libs=jars)
        brokers.append(broker)
        return broker, await asyncio.to_thread(broker.start, 120.0)

    results: list[Result] = []
    try:
        for scenario in scenarios(args):
            broker = None
            if scenario.own_broker:
                broker, bootstrap = await new_broker(f"kafka-{scenario.name}")
            else:
                if shared is None:
                    shared = (await new_broker("kafka"))[1]
                bootstrap = shared
            result = await run_scenario(scenario, bootstrap, workdir, broker)
            report(result)
            results.append(result)
            if broker is not None:
                await asyncio.to_thread(broker.stop)
    finally:
        for broker in brokers:
            await asyncio.to_thread(broker.stop)
        clean = bool(results) and all(r.ok and not r.stalled for r in results)
        if clean and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"worker logs and data kept in {workdir}", flush=True)
    print(summary(results), flush=True)
    if not all(r.ok for r in results):
        return 1
    return 2 if any(r.stalled for r in results) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.integration.chaos",
        description=package.__doc__.split("\n\n")[0] if package.__doc__ else None,
    )
    parser.add_argument("--scenarios", default="single,failover,broker")
    parser.add_argument("--records", type=int, default=200_000, help="usage messages per scenario")
    parser.add_argument("--sims", type=int, default=10_000, help="SIMs per scenario")
    parser.add_argument("--kills", type=int, default=10, help="random kill -9s, single worker")
    parser.add_argument("--failover-kills", type=int, default=4, help="random kill -9s, two workers")
    parser.add_argument("--broker-kills", type=int, default=2, help="random kill -9s, broker scenario")
    parser.add_argument("--broker-restarts", type=int, default=2, help="the second one is a SIGKILL")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--session-timeout", type=float, default=10.0, help="Kafka session, seconds")
    parser.add_argument("--stall-after", type=float, default=120.0, help="seconds without progress")
    parser.add_argument("--processing-guarantee", choices=("at_least_once", "exactly_once"), default=None)
    parser.add_argument(
        "--store", choices=("memory://", "rocksdb://"), default="memory://", help="table store"
    )
    parser.add_argument("--bootstrap", default=None, help="an existing broker (default: start one)")
    parser.add_argument("--keep", action="store_true", help="keep worker logs and data")
    parser.add_argument(
        "--race-join",
        action="store_true",
        help="failover: reproduce the Faust input loss (docs/reliability.md)",
    )
    args = parser.parse_args(argv)
    # The harness's own clients complain through every broker restart; the workers' logs keep theirs.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(run(args))
    except asyncio.CancelledError:
        print("chaos: interrupted; its workers and brokers are stopped", file=sys.stderr, flush=True)
        return 130
    finally:
        for broker in BROKERS:
            broker.stop()


if __name__ == "__main__":
    sys.exit(main())
