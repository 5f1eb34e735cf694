"""Chaos harness (issue #7): the real worker killed with SIGKILL, failed over and cut off
from a restarted broker, then every SIM's and every pool's monthly totals and the
commands checked against a ground truth computed from what was produced.

    python -m tests.integration.chaos [--scenarios single,failover,broker] [--records 200000]
        [--sims 10000] [--kills 10] [--processing-guarantee exactly_once]

``make chaos`` runs the three scenarios at full size; tests/integration/test_chaos.py
runs short versions of them inside ``make test``.

How the ground truth stays exact while kills and restarts land at random moments:

* A fleet of SIMs gets its subscriptions first; usage is produced only once the
  consumer group has committed every subscription offset (the two topics are consumed
  independently, so usage produced earlier could be counted against no plan).
* Usage comes in two phases around the month start B (00:00 1 April, Shanghai).
  Phase A (records of March) is processed by workers whose simulated clock stands two
  hours before B, so every March record is counted while March is the current month,
  whatever the kills cost in wall time: each auto-suspend SIM whose March total reaches
  its quota must get suspend/quota for March (R4). Once phase A is committed, the
  workers are killed and restarted on a clock a little before B, so a running worker
  crosses the month start itself; every SIM suspended in March must then be restored
  at B (R6: quota was its only reason and April starts empty). Only once that clock is
  past B comes phase B: late March records (counted for March, never suspending, R3),
  April records (suspend/quota for April when an auto-suspend SIM reaches its quota)
  and repeats of records of both phases (R2: never counted twice).
* A fifth of the fleet is in three pools (members in every partition; some with no
  cap of their own, none stopped for its own cap): one runs out in March and again in
  April, one in April only, one never. Definitions are produced before the
  subscriptions and membership stays fixed, so a pool's month total is the sum of its
  members' distinct records of that month (R17). After each phase's usage is committed
  the harness also waits until the pools have taken every report (``sim.pool-usage``)
  and the members every notice (``sim.pool-notices``): every member of a pool that
  reached its quota in phase A must then get suspend/pool/pool_exhausted for March and
  restore/pool/month_start at B (R18, R19), and suspend/pool/pool_exhausted for April
  when its April total reaches the quota. The verdict reads each pool from the
  changelog (its value, its member rows, and the rows its value still carries) and
  counts ``pool_totals_wrong`` (pool-months off the truth) and ``pool_rows_wrong`` (a
  member's row, from which a recovered worker goes on, off what it counted).
* Totals are read from the table's changelog (the last value per key, decoded with
  stream_app.codec), not from GET /sims/{iccid}: the API shows only the current month,
  while the changelog holds every month, and it is exactly what a replacement worker
  recovers from. A sample of SIMs is also read through the API of a live worker, to
  check that what it serves agrees with the changelog.
* A command is identified logically by (iccid, action, reason, trigger, month of
  ``at`` in Shanghai): a repeat after a crash may carry another ``at`` (the time it was
  decided again) but must carry the same command_id (derived from the cause and the
  month); two ids for one logical command are conflicting.

* "Processed and committed everything" is the consumer group's committed offsets
  reaching the end of the topic. Faust sometimes stops committing a partition after a
  restart or rebalance (docs/reliability.md); after ``stall_after`` seconds without
  progress the harness keeps the evidence and restarts the workers, as an operator
  would, at most twice per wait; the stalls are counted in the scenario's line.

The last line printed is
``chaos: kills=K records=R sims=S lost=0 double_counted=0 missing_commands=0 conflicting_command_ids=0
pool_totals_wrong=0`` and the exit status is 1 if any of the last five (or a scenario's
``pool_rows_wrong``) is not zero, 2 if they are but a scenario could not finish (its
line says why).

The package, one job per module, in import order: ``fleet`` (the fleet and its ground
truth), ``kafka`` (producing, reading topics, the group's lag), ``crew`` (the worker
processes and the chaos done to them), ``verdict`` (the outcome read back and judged
against the truth, the report), ``scenario`` (one scenario's phases, clock switch and
broker restarts) and ``__main__`` (the command line).
"""

from __future__ import annotations

from .scenario import Scenario, run_scenario
from .verdict import Result, report

__all__ = ["Result", "Scenario", "report", "run_scenario"]
