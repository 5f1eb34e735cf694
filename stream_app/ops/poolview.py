"""`stream-app pool POOL_ID`: one pool (流量池) from the worker's API, for a person."""

from __future__ import annotations

from typing import Any

from ..settings import Settings
from .simview import _bytes, fetch_and_print


def render(body: dict[str, Any]) -> str:
    lines = [f"POOL {body['pool_id']}  {body['state'].upper()}  ({body['members']:,} members)"]
    definition = body.get("definition")
    if definition is None:
        lines.append("definition: none yet (its members' usage is summed, not evaluated)")
    else:
        action = "stops every member" if definition["auto_suspend"] else "only warns"
        lines.append(
            f"quota {_bytes(definition['quota_bytes'])}/month, at the quota it {action} "
            f"({definition['timezone']}, version {definition['updated_at']})"
        )
    used, quota = body["used_bytes"], body["month_quota_bytes"]
    share = f" ({used / quota:.0%} of {_bytes(quota)})" if quota else ""
    lines.append(f"month {body['month']}: {_bytes(used)} used{share}, {_bytes(body['remaining_bytes'])} left")
    for addon in body.get("addons", []):
        lines.append(f"  add-on {addon['addon_id']}: +{_bytes(addon['bytes'])} for {addon['month']}")
    if body["thresholds_fired"]:
        lines.append("warned at: " + ", ".join(f"{t:.0%}" for t in body["thresholds_fired"]))
    lines.append(f"next: {body['next_due']['event']} at {body['next_due']['at']}")
    if body["member_iccids"]:
        shown = len(body["member_iccids"])
        lines.append(f"members (first {shown}):" if shown < body["members"] else "members:")
        lines += [f"  {iccid}" for iccid in body["member_iccids"]]
    return "\n".join(lines)


def show(settings: Settings, pool_id: str, limit: int = 20) -> int:
    return fetch_and_print(settings, f"/pools/{pool_id}?limit={limit}", render)
