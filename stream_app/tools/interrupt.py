"""SIGTERM like SIGINT, once, for scripts that start brokers and workers.

`make bench` and `make chaos` start a Kafka broker in a session of its own (so a Ctrl-C
meant for the script does not kill it halfway) and workers as child processes; only
the script's own clean-up stops them. Python runs that clean-up (``finally``) on a
KeyboardInterrupt but dies at once on SIGTERM, which is what ``timeout`` and ``kill``
send, and ignores SIGINT when it was started as a background job. With these handlers
both signals raise KeyboardInterrupt wherever the script is, in a blocking wait too,
and only once: a second signal during the clean-up does not cut it short. A script
whose clean-up awaits has the signals cancel its main task instead.
"""

from __future__ import annotations

import asyncio
import signal
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(number: int, frame: FrameType | None) -> None:
    for each in SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(number).name)


def interrupt_on_signals() -> None:
    """Install the handlers (in the main thread, before asyncio.run)."""
    for number in SIGNALS:
        signal.signal(number, _interrupt)


def cancel_on_signals(task: asyncio.Task[Any]) -> None:
    """SIGINT and SIGTERM cancel ``task``, once: for a script whose work and clean-up are
    async (its ``finally`` may await). A second signal is ignored, so it cannot cancel
    the clean-up in turn."""
    loop = asyncio.get_running_loop()

    def cancel() -> None:
        for number in SIGNALS:
            loop.add_signal_handler(number, _ignored)
        task.cancel()

    for number in SIGNALS:
        loop.add_signal_handler(number, cancel)


def _ignored() -> None:
    pass
