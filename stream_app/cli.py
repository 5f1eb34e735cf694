"""The ``stream-app`` command: worker, demo, replay, feed, sim, topics, broker."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .settings import Settings, SettingsError

if TYPE_CHECKING:
    from .tools.feed import FeedOptions

KAFKA_COMMANDS = frozenset({"worker", "demo", "feed", "topics"})
"""Commands that talk to Kafka: asked first whether a broker answers (tools/reach.py)."""


def _add_feed_options(parser: argparse.ArgumentParser, rate: float) -> None:
    parser.add_argument("--sims", type=int, default=1000, help="fleet size (1000)")
    parser.add_argument("--rate", type=float, default=rate, help=f"usage messages per second ({rate:g})")
    parser.add_argument("--auto-suspend-share", type=float, default=0.5, help="share with auto_suspend (0.5)")
    parser.add_argument("--duplicates", type=float, default=0.02, help="share of exact repeats (0.02)")
    parser.add_argument("--bad", type=float, default=0.005, help="share of bad records (0.005)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fleet and the records (1)")


def _feed_options(args: argparse.Namespace, duration: float | None, records: int | None) -> FeedOptions:
    from .tools.feed import FeedOptions

    return FeedOptions(
        sims=args.sims,
        rate=args.rate,
        auto_suspend_share=args.auto_suspend_share,
        duplicate_share=args.duplicates,
        bad_share=args.bad,
        seed=args.seed,
        duration=duration,
        records=records,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stream-app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("worker", help="run a worker in the foreground")
    demo = commands.add_parser(
        "demo", help="a worker, a synthetic fleet crossing a month start, a live summary"
    )
    _add_feed_options(demo, rate=200.0)
    demo.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    replay = commands.add_parser("replay", help="run the engine over JSON lines, no Kafka")
    replay.add_argument("file", nargs="?", default="-", help="input file, or - for stdin")
    feed = commands.add_parser("feed", help="send a synthetic fleet's subscriptions and usage records")
    _add_feed_options(feed, rate=200.0)
    feed.add_argument("--duration", type=float, help="seconds of usage records (default: no limit)")
    feed.add_argument("--records", type=int, help="usage messages in all (default: no limit)")
    sim = commands.add_parser("sim", help="show one SIM's state, asked from the worker's API")
    sim.add_argument("iccid")
    topics = commands.add_parser("topics", help="manage the topics")
    topics.add_argument("action", choices=["create"])
    broker = commands.add_parser("broker", help="the local single-node Kafka broker")
    broker.add_argument("action", choices=["start", "stop", "status", "jars"])
    args = parser.parse_args(argv)

    if args.command == "broker":
        return _broker(args.action)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command in KAFKA_COMMANDS and not _kafka_answers(args.command, settings):
        return 1
    if args.command == "worker":
        from .worker.app import run_worker

        run_worker(settings)
        return 0
    if args.command == "replay":
        from .tools.replay import run

        if args.file == "-":
            run(settings, sys.stdin.buffer, sys.stdout.buffer)
        else:
            with Path(args.file).open("rb") as source:
                run(settings, source, sys.stdout.buffer)
        return 0
    if args.command in ("feed", "demo"):
        try:
            options = _feed_options(
                args, *((args.duration, args.records) if args.command == "feed" else (None, None))
            )
        except ValueError as exc:
            print(f"{args.command}: {exc}", file=sys.stderr)
            return 2
        if args.command == "feed":
            from .tools.feed import run_console

            return run_console(settings, options)
        from .tools.demo import run_demo

        try:
            return asyncio.run(run_demo(settings, options, args.duration))
        except KeyboardInterrupt:
            return 0
    if args.command == "sim":
        from .ops.simview import show

        return show(settings, args.iccid)
    return _create_topics(settings)


def _kafka_answers(command: str, settings: Settings) -> bool:
    from .tools.reach import Unreachable, check

    try:
        check(settings)
    except Unreachable as exc:
        print(f"stream-app {command}: {exc}", file=sys.stderr)
        return False
    return True


def _create_topics(settings: Settings) -> int:
    from aiokafka.errors import KafkaError

    from .tools.admin import ensure_topics

    try:
        created = asyncio.run(ensure_topics(settings))
    except (KafkaError, RuntimeError) as exc:  # e.g. the broker went away, or partitions differ
        print(f"stream-app topics: {exc}", file=sys.stderr)
        return 1
    print(f"topics created: {', '.join(created) or 'none (all exist)'}")
    return 0


def _broker(action: str) -> int:
    from .tools.localbroker import BrokerError, LocalBroker

    try:
        broker = LocalBroker.from_env()
        if action == "jars":
            print(broker.ensure_jars())
        elif action == "start":
            print(f"Kafka is serving at {broker.start()} (log: {broker.log_file})")
        elif action == "stop":
            broker.stop()
            print("Kafka stopped")
        else:
            print(broker.status())
    except BrokerError as exc:
        print(f"broker: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
