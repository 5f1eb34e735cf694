"""`stream-app provision` without a broker: which offsets it commits, and its command line."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import timedelta

from stream_app.cli import _add_provision, _provision_options, main
from stream_app.tools.carrier import Refusal
from stream_app.tools.provision import Ledger

ICCID = "89860012345678901234"


def test_offsets_are_committed_only_below_the_oldest_command_not_answered() -> None:
    ledger = Ledger()
    for offset in (5, 6, 7):
        ledger.received("p0", offset)
    ledger.received("p1", 0)
    ledger.done("p0", 6)  # answered out of order: 5 is still at the carrier
    assert ledger.committable() == {"p0": 5, "p1": 0}
    ledger.committed(ledger.committable())
    assert ledger.committable() == {}
    ledger.done("p0", 5)
    ledger.done("p1", 0)
    assert ledger.committable() == {"p0": 7, "p1": 1}
    ledger.done("p0", 7)
    assert ledger.committable() == {"p0": 8, "p1": 1}


def test_a_partition_taken_away_is_no_longer_committed() -> None:
    ledger = Ledger()
    ledger.received("p0", 3)
    ledger.received("p1", 9)
    ledger.forget(["p0"])
    ledger.done("p0", 3)  # answered after the rebalance: the new owner reads it again
    assert ledger.committable() == {"p1": 9}


def test_the_options_reach_the_carrier() -> None:
    args = [
        *("provision", "--latency", "500ms", "--jitter", "0", "--fail-rate", "0.2", "--reject-rate", "0"),
        *("--repeat-window", "0", "--rate-limit", "5", "--inventory-every", "0", "--drift-rate", "0.5"),
        *("--refuse", f"{ICCID.lower()}:rejected", "--drift-card", ICCID.lower(), "--seconds", "3"),
        *("--commands", "10", "--group", "prov", "--seed", "4"),
    ]
    parser = argparse.ArgumentParser()
    _add_provision(parser.add_subparsers(dest="command"))
    options = _provision_options(parser.parse_args(args))
    carrier = options.carrier
    assert (carrier.latency, carrier.jitter) == (timedelta(milliseconds=500), timedelta(0))
    assert (carrier.fail_rate, carrier.reject_rate, carrier.drift_rate) == (0.2, 0.0, 0.5)
    assert (carrier.repeat_window, carrier.inventory_interval) == (timedelta(0), None)
    assert (carrier.calls_per_second, carrier.seed) == (5, 4)
    assert carrier.refusals == {ICCID: Refusal("rejected")}
    assert carrier.drift_cards == frozenset({ICCID})
    assert (options.group, options.seconds, options.commands) == ("prov", 3, 10)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app", "provision", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
        check=False,
        timeout=60,
    )


def test_help_says_what_it_reads_and_writes_with_an_example() -> None:
    shown = _run("--help")
    assert shown.returncode == 0
    for words in ("sim.commands", "sim.command-results", "sim.inventory", "example", "--refuse"):
        assert words in shown.stdout


def test_bad_options_are_refused_before_connecting() -> None:
    for args, says in (
        (("--refuse", "1234:failed"), "'1234' is not 89"),
        (("--refuse", f"{ICCID}:maybe"), "use ICCID:failed or ICCID:rejected"),
        (("--fail-rate", "0.7", "--reject-rate", "0.7"), "must not exceed 1"),
        (("--rate-limit", "0"), "calls_per_second must be positive"),
        (("--drift-card", "12"), "'12' is not 89"),
        (("--fail-rate", "2"), "a share between 0 and 1"),
        (("--latency", "soon"), "not a duration"),
    ):
        result = _run(*args)
        assert result.returncode == 2, args
        assert says in result.stderr, (args, result.stderr)


def test_main_dispatches_provision() -> None:
    assert main(["provision", "--refuse", "nonsense"]) == 2
