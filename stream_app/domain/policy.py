"""The worker-wide parameters of the rules (built from settings.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class Policy:
    timezone: str = "Asia/Shanghai"
    warn_at: tuple[float, ...] = (0.8, 0.9, 1.0)
    dedupe_horizon: timedelta = timedelta(days=7)
    forecast_horizon: timedelta = timedelta(hours=72)
    max_future_skew: timedelta = timedelta(minutes=15)
    dedupe_max_ids: int = 20_000
    """Safety cap per SIM (one record every 30 s for 7 days); past it the oldest ids are
    forgotten, so one SIM's state stays well under Kafka's 1 MB message limit."""
    grace_months: int = 3
    """Calendar months after expiry before the number is cancelled (R11)."""
    expiry_warn_days: tuple[int, ...] = (30, 7, 1)
    grace_warn_days: int = 7
    retention_fee: int = 500
    """Number-retention fee per started month while suspended for expiry, minor units."""
    retention_currency: str = "CNY"
    ack_timeout: timedelta | None = None
    """Acknowledgement tracking (R24): how long a sent command may wait for a result;
    None: tracking off (results are only recorded, every command is sent once)."""
    max_attempts: int = 6
