"""The `stream-app` command: worker, demo, replay, feed, provision, sim, sims, pool, audit,
deadletters, settings, topics, broker. What each one says in --help is in clihelp.py."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from . import clihelp
from .settings import Settings, SettingsError

if TYPE_CHECKING:
    from .tools.feed import FeedOptions
    from .tools.provision import ProvisionOptions

KAFKA_COMMANDS = frozenset({"worker", "demo", "feed", "topics", "deadletters", "audit"})
"""Commands that talk to Kafka: asked first whether a broker answers (tools/reach.py);
``audit`` only when it reads the topic (no ``--from``)."""


DEFAULT_LAST = 20
"""Dead letters `stream-app deadletters` shows when given neither --last nor --since."""


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


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    text: str,
    epilog: str,
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=summary,
        description=text,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(
        prog="stream-app",
        description=clihelp.MAIN,
        epilog=clihelp.MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = main_parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _command(commands, "worker", "run a worker in the foreground", clihelp.WORKER, clihelp.WORKER_EPILOG)
    demo = _command(
        commands,
        "demo",
        "a worker, a synthetic fleet crossing a month start, a live summary",
        clihelp.DEMO,
        clihelp.DEMO_EPILOG,
    )
    _add_feed_options(demo, rate=200.0)
    demo.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    replay = _command(
        commands, "replay", "run the engine over JSON lines, no Kafka", clihelp.REPLAY, clihelp.REPLAY_EPILOG
    )
    replay.add_argument("file", nargs="?", default="-", help="input file, or - for standard input (default)")
    feed = _command(
        commands,
        "feed",
        "send a synthetic fleet's subscriptions and usage records",
        clihelp.FEED,
        clihelp.FEED_EPILOG,
    )
    _add_feed_options(feed, rate=200.0)
    feed.add_argument("--duration", type=float, help="seconds of usage records (default: no limit)")
    feed.add_argument("--records", type=int, help="usage messages in all (default: no limit)")
    _add_provision(commands)
    sim = _command(
        commands, "sim", "show one SIM's state, asked of a worker", clihelp.SIM, clihelp.SIM_EPILOG
    )
    sim.add_argument("iccid")
    sims = _command(
        commands,
        "sims",
        "list the SIMs that match a filter, asked of a worker",
        clihelp.SIMS,
        clihelp.SIMS_EPILOG,
    )
    sims.add_argument("--status", help="active, suspended or cancelled (several: comma-separated)")
    sims.add_argument("--reason", help="quota, arrears, expiry, manual or pool (several: comma-separated)")
    sims.add_argument("--pool", metavar="POOL_ID", help="members of this pool (流量池)")
    sims.add_argument("--throttled", action="store_true", help="only throttled SIMs")
    sims.add_argument(
        "--pending",
        nargs="?",
        const="true",
        metavar="DIMENSION",
        help="only SIMs with a command waiting for its result (suspension or throttling: only that one)",
    )
    sims.add_argument("--limit", type=int, default=100, metavar="N", help="how many to list (100)")
    sims.add_argument("--after", metavar="ICCID", help="start after this ICCID (a previous list's cursor)")
    sims.add_argument("--all", action="store_true", help="every one, to the end (ignores --limit)")
    sims.add_argument("--json", action="store_true", help="one JSON object a line, for scripts")
    pool = _command(
        commands, "pool", "show one pool (流量池), asked of a worker", clihelp.POOL, clihelp.POOL_EPILOG
    )
    pool.add_argument("pool_id")
    pool.add_argument("--members", type=int, default=20, help="how many member ICCIDs to list (20)")
    audit = _command(commands, "audit", "print a SIM's audit trail", clihelp.AUDIT, clihelp.AUDIT_EPILOG)
    audit.add_argument("iccid")
    audit.add_argument(
        "--from", dest="source", metavar="FILE", help="replay output (JSON lines) instead of Kafka"
    )
    audit.add_argument("--json", action="store_true", help="the audit records as JSON lines")
    letters = _command(
        commands,
        "deadletters",
        "show refused input from the dead-letter topic",
        clihelp.DEADLETTERS,
        clihelp.DEADLETTERS_EPILOG,
    )
    letters.add_argument("--follow", "-f", action="store_true", help="then show new ones as they come")
    letters.add_argument(
        "--topic", action="append", default=[], help="input topic (repeatable), e.g. sim.usage"
    )
    letters.add_argument(
        "--error", action="append", default=[], help="error code (repeatable), e.g. invalid_json"
    )
    letters.add_argument("--since", help="written since: an RFC 3339 time, or a duration ago (30m, 2h, 7d)")
    letters.add_argument(
        "--last",
        type=int,
        metavar="N",
        help=f"only the last N that match (default {DEFAULT_LAST} without --since)",
    )
    letters.add_argument("--json", action="store_true", help="one JSON object a line, for scripts")
    _command(
        commands,
        "settings",
        "list every setting, its default and value here",
        clihelp.SETTINGS,
        clihelp.SETTINGS_EPILOG,
    )
    topics = _command(commands, "topics", "create the missing topics", clihelp.TOPICS, clihelp.TOPICS_EPILOG)
    topics.add_argument("action", choices=["create"])
    broker = _command(
        commands, "broker", "the local single-node Kafka broker", clihelp.BROKER, clihelp.BROKER_EPILOG
    )
    broker.add_argument("action", choices=["start", "stop", "status", "jars"])
    return main_parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:  # `stream-app deadletters | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "broker":
        return _broker(args.action)
    if args.command == "settings":
        return _settings()
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    from_file = getattr(args, "source", None) is not None  # audit --from FILE
    if args.command in KAFKA_COMMANDS and not from_file and not _kafka_answers(args.command, settings):
        return 1
    if args.command == "worker":
        from .worker.app import run_worker

        run_worker(settings)
        return 0
    if args.command == "replay":
        return _replay(settings, args.file)
    if args.command == "audit":
        return _audit(settings, args.iccid, args.source, args.json)
    if args.command == "deadletters":
        return _deadletters(settings, args)
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
    if args.command == "sims":
        return _sims(settings, args)
    if args.command == "pool":
        from .ops.poolview import show as show_pool

        return show_pool(settings, args.pool_id, args.members)
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


def _open(command: str, path: str) -> BinaryIO | None:
    """The file to read, or None after one line saying why it cannot be read."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return Path(path).open("rb")
    except OSError as exc:
        print(f"{command}: {path}: {exc.strerror or exc}", file=sys.stderr)
        return None


def _replay(settings: Settings, path: str) -> int:
    from .tools.replay import run

    source = _open("replay", path)
    if source is None:
        return 2
    with source:
        run(settings, source, sys.stdout.buffer)
    return 0


def _audit(settings: Settings, raw_iccid: str, path: str | None, as_json: bool) -> int:
    from .domain import InvalidInput, iccid_of
    from .ops import audit
    from .ops.kafkaread import ReadError
    from .topics import AUDIT

    try:
        iccid = iccid_of({"iccid": raw_iccid})
    except InvalidInput as exc:
        print(f"audit: {exc.detail}", file=sys.stderr)
        return 2
    topic = settings.topic(AUDIT)
    if path is None:
        try:
            records, where = asyncio.run(audit.from_topic(settings, topic, iccid))
        except ReadError as exc:
            print(f"audit: {exc}", file=sys.stderr)
            return 1
    else:
        source = _open("audit", path)
        if source is None:
            return 2
        with source:
            records, skipped = audit.from_lines(source, topic, iccid)
        where = f"{path} ({skipped} lines not JSON skipped)" if skipped else path
    if not records:
        print(f"audit: no audit records for {iccid} in {where}", file=sys.stderr)
        return 0
    audit.write(records, as_json)
    return 0


def _deadletters(settings: Settings, args: argparse.Namespace) -> int:
    from .domain.timeutil import TimeFormatError, parse_duration, parse_time
    from .ops import deadletters
    from .ops.kafkaread import ReadError
    from .topics import DEADLETTER, INPUTS

    since = None
    if args.since is not None:
        try:
            since = datetime.now(UTC) - parse_duration(args.since)
        except ValueError:
            try:
                since = parse_time(args.since)
            except TimeFormatError:
                print(
                    f"deadletters: --since {args.since!r}: use an RFC 3339 time with an offset "
                    "(2026-03-31T08:00:00+08:00) or a duration ago (30m, 2h, 7d)",
                    file=sys.stderr,
                )
                return 2
    if args.last is not None and args.last < 1:
        print("deadletters: --last must be at least 1", file=sys.stderr)
        return 2
    logical = {name: settings.topic(name) for name in INPUTS}
    filters = deadletters.Filters(
        topics=frozenset(logical.get(topic, topic) for topic in args.topic),
        errors=frozenset(args.error),
        since=since,
        # like tail: the latest few unless a time or a number is asked for
        last=args.last if args.last is not None or since is not None else DEFAULT_LAST,
    )
    try:
        return asyncio.run(
            deadletters.run(settings, settings.topic(DEADLETTER), filters, args.follow, args.json)
        )
    except ReadError as exc:
        print(f"deadletters: {exc}", file=sys.stderr)
        return 1


def _sims(settings: Settings, args: argparse.Namespace) -> int:
    from .ops import simsview

    if args.limit < 1:
        print("sims: --limit must be at least 1", file=sys.stderr)
        return 2
    named = {"status": args.status, "reason": args.reason, "pool": args.pool, "pending": args.pending}
    params = {name: value for name, value in named.items() if value is not None}
    if args.throttled:
        params["throttled"] = "true"
    if args.after:
        params["after"] = args.after
    return simsview.show(settings, params, None if args.all else args.limit, args.json)


def _settings() -> int:
    from .ops.settingsview import render

    listing, problems = render(os.environ)
    print(listing)
    if problems:
        print("\nproblems (a worker would not start):", file=sys.stderr)
        print("\n".join(f"  {problem}" for problem in problems), file=sys.stderr)
        return 2
    return 0


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

    p = _command(
        commands,
        "provision",
        "a simulated carrier answering the worker's commands (results, inventory)",
        clihelp.PROVISION,
        clihelp.PROVISION_EPILOG,
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
    if not _kafka_answers("provision", settings):  # after the options: their mistakes first
        return 1
    return run_console(settings, options)


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
