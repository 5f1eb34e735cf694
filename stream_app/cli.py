"""The ``stream-app`` command: worker, demo, replay, feed, provision, sim, topics, broker."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from .settings import Settings, SettingsError

if TYPE_CHECKING:
    from .tools.feed import FeedOptions
    from .tools.provision import ProvisionOptions


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


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915
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
    _add_provision(commands)
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
    if args.command == "provision":
        return _provision(settings, args)
    if args.command == "sim":
        from .ops.simview import show

        return show(settings, args.iccid)
    from .tools.admin import ensure_topics

    created = asyncio.run(ensure_topics(settings))
    print(f"topics created: {', '.join(created) or 'none (all exist)'}")
    return 0


PROVISION_HELP = """\
Play the provisioning side for demos and tests: read the commands the worker sends,
apply them to a simulated carrier and report back, as a real provisioning system
should.

in:  sim.commands (STREAM_APP_TOPIC_COMMANDS), in a consumer group of its own
out: sim.command-results (one result per command answered: applied, failed or rejected)
     sim.inventory (every --inventory-every, the status of every card it knows)

The carrier answers each call after --latency plus up to --jitter, refuses a share of
calls (--fail-rate: failed, the worker sends the command again; --reject-rate:
rejected, final), refuses a second status change of a card within --repeat-window,
never re-activates a cancelled number, takes at most --rate-limit calls a second, and
now and then changes a card's status on its own (--drift-rate). Durations are in the
worker's clock time (STREAM_APP_CLOCK...): the same environment as the worker's gives
the same clock. Set STREAM_APP_COMMAND_ACK_TIMEOUT on the worker for it to act on the
results (resends, command_failed, drift repair). Ctrl-C or SIGTERM stops it cleanly.
"""

PROVISION_EXAMPLE = """\
example (next to `make run DEMO=0` with STREAM_APP_COMMAND_ACK_TIMEOUT=1m):
  stream-app provision --fail-rate 0.1 --drift-rate 0.01 --inventory-every 30s
  stream-app provision --refuse 89860012345678901234:failed:2 --seconds 60
"""


def _add_provision(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .domain.timeutil import parse_duration

    def duration(text: str) -> timedelta:
        try:
            value = parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if value < timedelta(0):
            raise argparse.ArgumentTypeError("must not be negative")
        return value

    def share(text: str) -> float:
        value = float(text)
        if not 0 <= value <= 1:
            raise argparse.ArgumentTypeError("a share between 0 and 1")
        return value

    p = commands.add_parser(
        "provision",
        help="a simulated carrier answering the worker's commands (results, inventory)",
        description=PROVISION_HELP,
        epilog=PROVISION_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--group", help="consumer group (default: STREAM_APP_ID plus -provision)")
    add(
        "--latency",
        type=duration,
        default="1s",
        metavar="DURATION",
        help="fixed part of each answer's delay (1s)",
    )
    add(
        "--jitter", type=duration, default="2s", metavar="DURATION", help="plus a random part up to this (2s)"
    )
    add(
        "--fail-rate",
        type=share,
        default=0.05,
        metavar="SHARE",
        help="calls answered failed: retryable (0.05)",
    )
    add(
        "--reject-rate",
        type=share,
        default=0.01,
        metavar="SHARE",
        help="calls answered rejected: final (0.01)",
    )
    add(
        "--repeat-window",
        type=duration,
        default="3m",
        metavar="DURATION",
        help="refuse (failed) a card's second status change within this (3m; 0: never)",
    )
    add("--rate-limit", type=float, metavar="N", help="calls per second; more wait their turn (no limit)")
    add(
        "--inventory-every",
        type=duration,
        default="1m",
        metavar="DURATION",
        help="publish every known card's status this often (1m; 0: never)",
    )
    add(
        "--drift-rate",
        type=share,
        default=0.0,
        metavar="SHARE",
        help="chance per idle card and inventory round that the carrier flips its status (0)",
    )
    add("--seed", type=int, default=1, help="seed of every chance: same seed, same outcomes (1)")
    add(
        "--refuse",
        action="append",
        default=[],
        metavar="ICCID:OUTCOME[:TIMES]",
        help="refuse this card's next TIMES calls (default: all) with failed or rejected (repeatable)",
    )
    add(
        "--drift-card",
        action="append",
        default=[],
        metavar="ICCID",
        help="once a command has changed this card, the carrier flips it back once (repeatable)",
    )
    add("--seconds", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    add("--commands", type=int, metavar="N", help="stop after answering N commands (default: no limit)")


def _provision_options(args: argparse.Namespace) -> ProvisionOptions:
    from .domain import iccid_of
    from .tools.carrier import CarrierOptions, Refusal
    from .tools.provision import ProvisionOptions

    refusals = dict(Refusal.parse(text) for text in args.refuse)
    return ProvisionOptions(
        carrier=CarrierOptions(
            latency=args.latency,
            jitter=args.jitter,
            fail_rate=args.fail_rate,
            reject_rate=args.reject_rate,
            repeat_window=args.repeat_window,
            calls_per_second=args.rate_limit,
            inventory_interval=args.inventory_every or None,
            drift_rate=args.drift_rate,
            seed=args.seed,
            refusals=refusals,
            drift_cards=frozenset(iccid_of({"iccid": text}) for text in args.drift_card),
        ),
        group=args.group,
        seconds=args.seconds,
        commands=args.commands,
    )


def _provision(settings: Settings, args: argparse.Namespace) -> int:
    from .domain import InvalidInput
    from .tools.provision import run_console

    try:
        options = _provision_options(args)
    except (ValueError, InvalidInput) as exc:
        print(f"provision: {getattr(exc, 'detail', exc)}", file=sys.stderr)
        return 2
    return run_console(settings, options)


def _broker(action: str) -> int:
    from .tools.localbroker import BrokerError, LocalBroker

    broker = LocalBroker.from_env()
    try:
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
