"""`stream-app sims`: the SIMs that match a filter, from the worker's API, for a person
(a table and a count) or for a script (JSON lines).

The API answers a page at a time (``next`` is the cursor); a page may be short while
``next`` is not null, since each worker bounds the SIMs it looks at per request, so the
command follows ``next`` until it has the SIMs asked for, or to the end with ``--all``.
Rows are printed as pages come, so a walk over a million SIMs needs no memory.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson

from ..settings import Settings

PAGE = 1000
"""SIMs asked per request when walking."""
PARTIAL = 3
"""Exit status when some partitions did not answer: the list is incomplete."""
TIMEOUT = 30.0


class NoAnswer(Exception):
    pass


Fetch = Callable[[dict[str, str]], dict[str, Any]]


@dataclass
class Walk:
    """What a walk saw besides the SIMs: where it stopped, which partitions were missing."""

    next: str | None = None
    partial: set[int] = field(default_factory=set)
    count: int = 0


def walk(fetch: Fetch, params: dict[str, str], want: int | None, walked: Walk) -> Iterator[dict[str, Any]]:
    """The SIMs in order, page after page, until ``want`` of them (None: to the end)."""
    after = params.get("after", "")
    while want is None or walked.count < want:
        asked = PAGE if want is None else min(PAGE, want - walked.count)
        body = fetch({**params, "after": after, "limit": str(asked)})
        walked.partial.update(body.get("partial", []))
        for sim in body["sims"]:
            walked.count += 1
            yield sim
        walked.next = body["next"]
        if walked.next is None:
            return
        after = walked.next


HEADER = f"{'ICCID':<20}  {'STATUS':<9}  {'REASONS':<26}  {'POOL':<20}  NOTES"


def row(sim: dict[str, Any]) -> str:
    notes = (["throttled"] if sim.get("throttled") else []) + [f"pending {d}" for d in sim.get("pending", [])]
    reasons = ",".join(sim["reasons"]) or "-"
    return (
        f"{sim['iccid']:<20}  {sim['status']:<9}  {reasons:<26}  {sim.get('pool_id') or '-':<20}  "
        f"{', '.join(notes) or '-'}"
    ).rstrip()


def describe(params: dict[str, str]) -> str:
    shown = [f"{name} {value}" for name, value in params.items() if name not in ("after", "limit")]
    return f" ({', '.join(shown)})" if shown else ""


def run(
    fetch: Fetch,
    params: dict[str, str],
    want: int | None,
    as_json: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    walked = Walk()
    try:
        for sim in walk(fetch, params, want, walked):
            if as_json:
                out.write(orjson.dumps(sim).decode() + "\n")
            else:
                if walked.count == 1:
                    out.write(HEADER + "\n")
                out.write(row(sim) + "\n")
    except NoAnswer as exc:
        print(exc, file=err)
        return 1
    summary = f"{walked.count:,} SIM{'' if walked.count == 1 else 's'}{describe(params)}"
    if walked.next is not None:
        summary += f"; more after {walked.next} (--after {walked.next}, or --all)"
    print(summary, file=err if as_json else out)
    if walked.partial:
        numbers = ", ".join(str(p) for p in sorted(walked.partial))
        print(
            f"incomplete: partitions {numbers} did not answer (their worker is down or rebalancing)",
            file=err,
        )
        return PARTIAL
    return 0


def api_fetch(settings: Settings) -> Fetch:
    """GET /sims from the worker at STREAM_APP_WEB_HOST:STREAM_APP_WEB_PORT (any worker:
    it gathers from its peers)."""

    def fetch(params: dict[str, str]) -> dict[str, Any]:
        url = f"http://{settings.web_host}:{settings.web_port}/sims?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url)
        if settings.api_token is not None:
            request.add_header("Authorization", f"Bearer {settings.api_token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                body: dict[str, Any] = orjson.loads(response.read())
                return body
        except urllib.error.HTTPError as error:
            raise NoAnswer(f"{url}: {error.code} {error.read().decode(errors='replace')}") from None
        except OSError as error:
            raise NoAnswer(f"{url}: no worker answers ({error})") from None

    return fetch


def show(settings: Settings, params: dict[str, str], want: int | None, as_json: bool) -> int:
    return run(api_fetch(settings), params, want, as_json, sys.stdout, sys.stderr)
