"""`stream-app sim ICCID`: one SIM's state from the worker's API, for a person."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson

from ..settings import Settings


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def render(body: dict[str, Any]) -> str:
    reasons = ", ".join(body["reasons"]) or "none"
    throttled = "  THROTTLED" if body.get("throttled") else ""
    lines = [f"SIM {body['iccid']}  {body['status'].upper()}{throttled}  (reasons: {reasons})"]
    plan = body.get("plan")
    if plan is None:
        lines.append("plan: no subscription (usage is counted, not evaluated)")
    else:
        cap = (
            f"{_bytes(plan['quota_bytes'])}/month" if plan["quota_bytes"] is not None else "no cap of its own"
        )
        action = plan.get("on_quota", "suspend" if plan["auto_suspend"] else "notify")
        if action == "throttle":
            action = f"throttle to {plan['throttle_kbps']} kbps"
        pool = f", pool {plan['pool_id']}" if plan.get("pool_id") else ""
        lines.append(
            f"plan {plan['plan_id']}: {cap}, at the quota: {action}{pool}, valid {plan['valid_from']} -> "
            f"{plan['expires_at'] or 'no expiry'} ({plan['timezone']})"
        )
    used, left = body["used_bytes"], body["remaining_bytes"]
    quota = body.get("month_quota_bytes", plan["quota_bytes"] if plan else None)
    share = f" ({used / quota:.0%} of {_bytes(quota)})" if quota else ""
    lines.append(f"month {body['month']}: {_bytes(used)} used{share}, {_bytes(left)} left")
    for addon in body.get("addons", []):
        lines.append(f"  add-on {addon['addon_id']}: +{_bytes(addon['bytes'])} for {addon['month']}")
    member = body.get("pool")
    if member:
        held = f"ran out, held until {member['until']}" if member["exhausted"] else "has room"
        counted = _bytes(member["counted_this_month"])
        lines.append(f"pool {member['pool_id']}: {held}; {counted} counted for it")
    forecast = body.get("forecast")
    if forecast and forecast["before_month_end"]:
        lines.append(f"forecast: quota runs out at {forecast['exhaustion_at']}, before the month ends")
    elif forecast:
        lines.append("forecast: the quota lasts the month at this month's rate")
    if body.get("balance") is not None:
        lines.append(f"balance: {body['balance']} (minor units)")
    if body.get("cancel_at"):
        lines.append(f"expired {body['expired_at']}; the number is cancelled at {body['cancel_at']}")
    carrier = body.get("carrier")
    if carrier:
        throttled = "" if carrier.get("throttled") is None else f", throttled {carrier['throttled']}"
        seen = f"seen {carrier['at']}, {carrier['source']}"
        status = carrier.get("status") or "?"
        lines.append(f"carrier: {status}{throttled} ({seen}); intended: {body['intended_status']}")
    for pending in body.get("pending_commands", []):
        lines.append(
            f"pending: {pending['action']} {pending['reason'] or '-'} attempt {pending['attempt']}, "
            f"waiting for a {pending['waiting']} until {pending['until']}  id {pending['command_id']}"
        )
    lines.append(f"next: {body['next_due']['event']} at {body['next_due']['at']}")
    if body["last_commands"]:
        lines.append("last commands:")
        lines += [
            f"  {c['at']}  {c['action']} {c['reason']}/{c['trigger']}  "
            f"cause {c['cause']}  id {c['command_id']}"
            for c in body["last_commands"]
        ]
    return "\n".join(lines)


def show(settings: Settings, iccid: str) -> int:
    return fetch_and_print(settings, f"/sims/{iccid}", render)


def fetch_and_print(settings: Settings, path: str, render: Callable[[dict[str, Any]], str]) -> int:
    """GET ``path`` from the worker's API (any worker: it routes to the owner) and print it."""
    url = f"http://{settings.web_host}:{settings.web_port}{path}"
    request = urllib.request.Request(url)
    if settings.api_token is not None:
        request.add_header("Authorization", f"Bearer {settings.api_token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        print(f"{url}: {error.code} {error.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"{url}: no worker answers ({error})", file=sys.stderr)
        return 1
    print(render(body))
    return 0
