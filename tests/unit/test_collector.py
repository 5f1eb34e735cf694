"""The worker and replay tune Python's collector: what exists is frozen, and young
collections come every 50,000 allocations rather than 700."""

from __future__ import annotations

import gc
import io

from stream_app import collector
from stream_app.settings import Settings
from stream_app.tools import replay


def test_tune_freezes_what_exists_and_collects_less_often() -> None:
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        collector.tune()
        assert gc.get_threshold() == collector.THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_replay_runs_with_the_collector_tuned() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        sink = io.BytesIO()
        replay.run(Settings.from_env({}), io.BytesIO(b'{"tick": "2026-03-01T00:00:00Z"}\n'), sink)
        assert gc.get_threshold() == collector.THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
