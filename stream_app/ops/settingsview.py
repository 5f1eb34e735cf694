"""`stream-app settings`: every variable, its default, its value here, and what it means.

Secrets are shown as ``<secret>`` when set. The problems `stream-app worker` would stop
on (bad values, unknown ``STREAM_APP_*`` names) follow the table, so the command doubles
as a check of an environment before a deploy.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..settings import (
    FAUST_PREFIX,
    LOCAL_BROKER_VARIABLES,
    SECRETS,
    VARIABLES,
    Settings,
    SettingsError,
    Variable,
)


def _current(name: str, env: Mapping[str, str]) -> str:
    if name not in env:
        return "-"
    if name in SECRETS:
        return "<secret>" if env[name] else "(empty)"
    return env[name] or "(empty)"


def _faust_value(name: str, value: str) -> str:
    secret = any(word in name for word in ("PASSWORD", "TOKEN", "SECRET", "CREDENTIALS"))
    return "<secret>" if secret else value


def _table(variables: tuple[Variable, ...], env: Mapping[str, str]) -> list[str]:
    rows = [(v.name, v.default or "-", _current(v.name, env), v.help) for v in variables]
    widths = [max(len(row[i]) for row in (("variable", "default", "current", ""), *rows)) for i in range(3)]
    header = ("variable", "default", "current", "meaning")
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in (header, *rows)
    ]


def render(env: Mapping[str, str]) -> tuple[str, list[str]]:
    """The listing, and the problems found (empty when the settings are good)."""
    lines = _table(VARIABLES, env)
    faust = sorted(name for name in env if name.startswith(FAUST_PREFIX))
    lines += ["", f"Faust's own settings ({FAUST_PREFIX}<SETTING>, passed to Faust as they are):"]
    lines += [f"  {name}={_faust_value(name, env[name])}" for name in faust] or ["  none set"]
    lines += ["", "Local development broker (stream-app broker, make run; not read by the worker):"]
    lines += ["  " + line for line in _table(LOCAL_BROKER_VARIABLES, env)]
    try:
        Settings.from_env(env)
    except SettingsError as exc:
        return "\n".join(lines), exc.problems
    return "\n".join(lines), []
