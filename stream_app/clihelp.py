"""What `stream-app COMMAND --help` says: what the command does, its input and output
formats, and an example. Plain text for a terminal (argparse keeps the line breaks)."""

from __future__ import annotations

import textwrap

from .settings import VARIABLES
from .topics import REGISTRY

MAIN = """\
stream-app: a streaming usage processor for IoT SIM cards. Workers read carrier usage
records and plan, billing and operator events from Kafka, keep each SIM's monthly usage,
and send suspend/restore commands, alerts, charges, an audit trail and dead letters.

Settings come from the environment: 'stream-app settings' lists them all."""

MAIN_EPILOG = """\
examples:
  stream-app worker                                 run a worker (Ctrl-C stops it)
  stream-app replay march.jsonl > outputs.jsonl     the engine over a file, no Kafka
  stream-app audit 89860012345678901234             why a SIM is (or is not) stopped
  stream-app sims --status suspended --reason quota which SIMs are stopped for quota
  stream-app deadletters --since 1h                 what was refused in the last hour

'stream-app COMMAND --help' tells more about each command."""

_KEY_SETTINGS = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "STREAM_APP_ID",
    "STREAM_APP_PARTITIONS",
    "STREAM_APP_TIMEZONE",
    "STREAM_APP_STORE",
    "STREAM_APP_DATA_DIR",
    "STREAM_APP_WEB_PORT",
    "STREAM_APP_LOG_FORMAT",
)


def _names(direction: str) -> str:
    names = [spec.default_name for spec in REGISTRY if spec.direction == direction]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=88, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False)


def _key_settings() -> str:
    defaults = {v.name: v.default for v in VARIABLES}
    return "\n".join(f"  {name:<26}{defaults[name] or '-'}" for name in _KEY_SETTINGS)


WORKER = """\
Run one worker in the foreground. It consumes the input topics, decides with the engine,
writes commands, alerts, charges, audit records and dead letters to the output topics,
keeps every SIM's state in a changelog-backed table, and serves the HTTP API
(/sims/{iccid}, /healthz, /readyz, /metrics). Workers with the same STREAM_APP_ID share
the partitions. Ctrl-C or SIGTERM stops it cleanly."""

WORKER_EPILOG = f"""\
input:
{
    _wrap(
        f"JSON messages on {_names('in')}, keyed by the upper-case ICCID (schemas/ has every "
        "message's JSON Schema). A message that cannot be applied goes to sim.deadletter, and a "
        "summary of them is logged at most once a minute per topic and error ('stream-app "
        "deadletters' shows each one)."
    )
}
output:
{
    _wrap(
        f"JSON messages on {_names('out')}; log lines on standard output (text, or one JSON "
        "object a line with STREAM_APP_LOG_FORMAT=json)."
    )
}
settings (environment variables; the main ones and their defaults):
{_key_settings()}
  'stream-app settings' lists every one with its default, its value here and its
  meaning. A bad value or an unknown STREAM_APP_* name stops the start with one line each.
example:
  KAFKA_BOOTSTRAP_SERVERS=kafka-1:9092,kafka-2:9092 STREAM_APP_STORE=rocksdb:// \\
    stream-app worker"""

DEMO = """\
A two-minute demo (what 'make run' runs): starts a worker, feeds it a synthetic fleet on a
simulated clock that starts 90 s before the month ends, and shows a live line of records,
suspends, restores, alerts and dead letters, and of what provisioning did: 'stream-app
provision' runs next to the worker, which follows each command until it is applied
(results applied and failed, resends, drift). Each run uses its own topics and consumer
group. Ctrl-C, SIGTERM or SIGHUP stop it, also in the background; so does the worker's
death (exit status 1). It always ends with a summary and stops its worker."""

DEMO_EPILOG = """\
input:   none but the options; the topics are created on the broker of KAFKA_BOOTSTRAP_SERVERS
output:  the worker's URLs, a progress line every second, a final summary; the worker's
         log goes to <STREAM_APP_DATA_DIR>/demo-<time>/worker.log, provisioning's to
         provision.log next to it
example:
  stream-app demo --sims 200 --rate 50 --duration 120"""

REPLAY = """\
Run the engine over JSON lines without Kafka and write every output as a JSON line: for
what-if runs, backfills, debugging and tests. The settings are the worker's (time zone,
thresholds, horizons, grace, fees, topic names)."""

REPLAY_EPILOG = """\
input (FILE, or standard input when FILE is - or absent), one JSON object a line:
  {"topic": "sim.subscriptions", "value": {...a subscription...}}
  {"topic": "sim.usage", "value": {...a usage record...}}
  {"tick": "2026-04-01T00:00:30+08:00"}
  Before each line, now advances to the line's time (a usage record's end, a
  subscription's updated_at, the at of the others, or the tick), never backwards, and
  what falls due on the way (month starts, expiries, warnings) happens in time order.
  Blank lines are skipped.
output (standard output), one JSON object a line:
  {"topic": "sim.commands", "key": "<ICCID>", "value": {...a command...}}
  A bad line becomes a sim.deadletter output whose offset is its line number (from 1).
examples:
  stream-app replay march.jsonl > outputs.jsonl
  STREAM_APP_WARN_AT=0.5,1.0 stream-app replay march.jsonl | grep sim.alerts
  stream-app audit 89860012345678901234 --from outputs.jsonl"""

FEED = """\
Send a synthetic fleet's subscriptions, then usage records at a steady rate, to the
configured topics: heavy users that reach their quota in about 90 s, a few plans about
to expire, exact duplicates and bad records. Deterministic for a seed."""

FEED_EPILOG = """\
output:  messages on sim.subscriptions and sim.usage; a progress line a second and a
         summary on standard error. Exit 0 when done or stopped (Ctrl-C, SIGTERM), 1
         when a delivery fails.
example:
  stream-app feed --sims 10000 --rate 1000 --duration 600"""

PROVISION = """\
Play the provisioning side for demos and tests: read the commands the worker sends, apply
them to a simulated carrier and report back, as a real provisioning system should. Set
STREAM_APP_COMMAND_ACK_TIMEOUT on the worker for it to act on what comes back (resends,
command_failed alerts, drift repair).

The carrier answers each call after --latency plus up to --jitter, refuses a share of
calls (--fail-rate: failed, the worker sends the command again; --reject-rate: rejected,
final), refuses a second status change of a card within --repeat-window, never
re-activates a cancelled number, takes at most --rate-limit calls a second, and now and
then changes a card's status on its own (--drift-rate). Durations are in the clock's
time (STREAM_APP_CLOCK...): run it with the worker's environment and both share one
clock. Ctrl-C or SIGTERM stops it cleanly."""

PROVISION_EPILOG = """\
input:   the commands on sim.commands (STREAM_APP_TOPIC_COMMANDS), in a consumer group of
         its own; an offset is committed once the command's result is acknowledged
output:  one result per command on sim.command-results (applied, failed or rejected) and,
         every --inventory-every, the status of every card it knows on sim.inventory,
         both keyed by the upper-case ICCID; a log line per result and per drift, and a
         summary at the end on standard output
examples:
  stream-app provision --fail-rate 0.1 --drift-rate 0.01 --inventory-every 30s
  stream-app provision --refuse 89860012345678901234:failed:2 --seconds 60"""

SIM = """\
Show one SIM's state, asked of a worker's HTTP API (any worker: the one that owns the SIM
answers): status and reasons, plan, this month's usage and what is left, forecast,
balance, expiry, the next due event and the last commands."""

SIM_EPILOG = """\
input:   the ICCID; the worker at STREAM_APP_WEB_HOST:STREAM_APP_WEB_PORT (with
         STREAM_APP_API_TOKEN when the API asks for one)
output:  a few lines for a person; exit 1 when no worker answers or the SIM is unknown
example:
  stream-app sim 89860012345678901234"""

SIMS = """\
List the SIMs that match a filter, across every worker of the group (the worker asked
gathers from its peers), in ICCID order: which SIMs are suspended, and why; the members
of a pool; the throttled ones; those with a command waiting for its result. Each filter
narrows the list; with none, every SIM is listed."""

SIMS_EPILOG = """\
input:   the filters; the worker at STREAM_APP_WEB_HOST:STREAM_APP_WEB_PORT (with
         STREAM_APP_API_TOKEN when the API asks for one)
output:  a table (ICCID, status, reasons, pool, notes) and a count, with the cursor to
         go on from when there are more; with --json one JSON object a line (iccid,
         status, reasons, throttled, pending, pool_id) and the count on standard error.
         Exit 1 when no worker answers, 3 when some partitions did not answer (their
         worker is down or rebalancing: the list is incomplete, and says which).
examples:
  stream-app sims --status suspended --reason quota
  stream-app sims --reason arrears,expiry --all --json > stopped.jsonl
  stream-app sims --pool fleet-1 --throttled"""

POOL = """\
Show one pool (流量池), asked of a worker's HTTP API (any worker: the one that owns the
pool answers): its state (ok, exhausted, unknown), definition, this month's usage
against its quota with add-ons, the thresholds it warned at, how many members it has
and the first of them, and its next month start."""

POOL_EPILOG = """\
input:   the pool id; the worker at STREAM_APP_WEB_HOST:STREAM_APP_WEB_PORT (with
         STREAM_APP_API_TOKEN when the API asks for one)
output:  a few lines for a person; exit 1 when no worker answers or the pool is unknown
example:
  stream-app pool fleet-1 --members 50"""

AUDIT = """\
Print a SIM's audit trail as a table: every change of its reasons or status, with the
trigger, the id of the input that caused it, the reasons before and after, and the
command it sent. Read from the audit topic (only the partition the ICCID's key hashes
to, from its beginning to its current end), or from replay output with --from."""

AUDIT_EPILOG = """\
input:   the ICCID (upper or lower case); the audit topic, or with --from the JSON lines
         'stream-app replay' writes (- for standard input)
output:  a table on standard output, or with --json the audit records as JSON lines
examples:
  stream-app audit 89860012345678901234
  stream-app replay march.jsonl > out.jsonl && stream-app audit 89860012345678901234 --from out.jsonl"""

DEADLETTERS = """\
Show what the worker refused, from the dead-letter topic, oldest first: when it was
refused, where the message was (topic[partition]@offset), the error and its detail, and
the original payload (text when it is UTF-8, hex otherwise; long payloads cut). By
default the last 20; --since and --last choose others. Ctrl-C or SIGTERM stop --follow."""

DEADLETTERS_EPILOG = """\
output:  three lines a letter and a count by error on standard error; with --json one
         JSON object a line: the dead letter as written, plus at (when it was written),
         key and payload_text (the whole payload as text, or null when not UTF-8)
examples:
  stream-app deadletters --last 100
  stream-app deadletters --topic sim.usage --error invalid_json --since 2h
  stream-app deadletters --follow --json | jq .detail"""

SETTINGS = """\
List every setting: its environment variable, its default, its value here (secrets
shown as <secret>) and its meaning; then Faust's own settings and the local broker's.
Any problem a worker would stop on (a bad value, an unknown STREAM_APP_* name) follows,
and the exit status is then 2."""

SETTINGS_EPILOG = """\
example:
  STREAM_APP_PARTITONS=4 stream-app settings   (says: did you mean STREAM_APP_PARTITIONS?)"""

TOPICS = """\
Create the topics of the contract that do not exist yet (STREAM_APP_PARTITIONS partitions,
STREAM_APP_REPLICATION_FACTOR replicas, sim.subscriptions compacted); refuse input topics
that exist with another partition count."""

TOPICS_EPILOG = """\
output:  the names of the topics created
example:
  KAFKA_BOOTSTRAP_SERVERS=kafka-1:9092 stream-app topics create"""

BROKER = """\
The local single-node Kafka broker for development (not for production): 'jars' collects
its jars with Maven, 'start' starts it (or reuses the one running) and waits until it
serves, 'stop' stops it, 'status' tells. It lives in STREAM_APP_KAFKA_HOME (.kafka)."""

BROKER_EPILOG = """\
example:
  stream-app broker start && stream-app topics create && stream-app worker"""
