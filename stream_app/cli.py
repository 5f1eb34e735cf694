"""The ``stream-app`` command: worker, replay, topics, broker."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stream-app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("worker", help="run a worker in the foreground")
    replay = commands.add_parser("replay", help="run the engine over JSON lines, no Kafka")
    replay.add_argument("file", nargs="?", default="-", help="input file, or - for stdin")
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
        from .app import run_worker

        run_worker(settings)
        return 0
    if args.command == "replay":
        from .replay import run

        if args.file == "-":
            run(settings, sys.stdin.buffer, sys.stdout.buffer)
        else:
            with Path(args.file).open("rb") as source:
                run(settings, source, sys.stdout.buffer)
        return 0
    from .admin import ensure_topics

    created = asyncio.run(ensure_topics(settings))
    print(f"topics created: {', '.join(created) or 'none (all exist)'}")
    return 0


def _broker(action: str) -> int:
    from .localbroker import BrokerError, LocalBroker

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
