"""The pure domain: state, inputs, outputs and rules. Standard library only.

Nothing in this package may import faust, aiokafka or do I/O; tests/unit/test_purity.py
keeps it that way.
"""

from .engine import Policy, Step, apply_subscription, apply_tick, apply_usage, due_at, new_state
from .inputs import InvalidInput, Subscription, UsageRecord, iccid_of, subscription, usage_record
from .outputs import Output, Rejection
from .state import SimState, state_from_dict, state_to_dict

__all__ = [
    "InvalidInput",
    "Output",
    "Policy",
    "Rejection",
    "SimState",
    "Step",
    "Subscription",
    "UsageRecord",
    "apply_subscription",
    "apply_tick",
    "apply_usage",
    "due_at",
    "iccid_of",
    "new_state",
    "state_from_dict",
    "state_to_dict",
    "subscription",
    "usage_record",
]
