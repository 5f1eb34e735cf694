"""The pure domain: state, inputs, outputs and rules. Standard library only.

Nothing in this package may import faust, aiokafka or do I/O; tests/unit/test_purity.py
keeps it that way.
"""

from .engine import (
    Step,
    apply_balance,
    apply_request,
    apply_subscription,
    apply_tick,
    apply_usage,
    new_state,
)
from .inputs import (
    BalanceEvent,
    CarrierStatus,
    CommandResult,
    InvalidInput,
    ManualRequest,
    Subscription,
    UsageRecord,
    balance_event,
    carrier_status,
    command_result,
    iccid_of,
    manual_request,
    subscription,
    usage_record,
)
from .outputs import Output, Rejection
from .policy import Policy
from .state import SimState, copy_state
from .timeline import due_at

__all__ = [
    "BalanceEvent",
    "CarrierStatus",
    "CommandResult",
    "InvalidInput",
    "ManualRequest",
    "Output",
    "Policy",
    "Rejection",
    "SimState",
    "Step",
    "Subscription",
    "UsageRecord",
    "apply_balance",
    "apply_request",
    "apply_subscription",
    "apply_tick",
    "apply_usage",
    "balance_event",
    "carrier_status",
    "command_result",
    "copy_state",
    "due_at",
    "iccid_of",
    "manual_request",
    "new_state",
    "subscription",
    "usage_record",
]
