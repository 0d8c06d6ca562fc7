"""What every change of version shares (an upgrade, its rollback, a PostgreSQL major
upgrade): the stack's state before and after, said as a summary, nginx's maintenance
page, and starting services until every one is healthy, or why not."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from invoke.context import Context

from ..data import database
from ..engines import stackstate
from ..engines.compose import Compose
from ..engines.shell import dry
from ..stack.config import Settings
from ..stack.errors import StackError
from ..stack.model import MAINTENANCE_COMMAND, SERVICES


@dataclass(frozen=True)
class State:
    """What the stack runs: version, per service (image reference, image id), migrations."""

    version: str
    images: dict[str, tuple[str, str]]
    migrations: tuple[str, ...]


def short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12] or "?"


def current_state(c: Context, compose: Compose, settings: Settings) -> State:
    migrations = database.Database.of(compose, settings).migrations(c)
    return State(settings.version, stackstate.stack_images(c, compose), tuple(migrations))


def summary(title: str, before: State, after: State, folder: Path) -> str:
    """The report said at the end of an upgrade (``title`` "upgraded") or a rollback
    ("rolled back")."""
    from .ops import format_table

    rows = []
    for service in sorted(set(before.images) | set(after.images)):
        old = before.images.get(service)
        new = after.images.get(service)
        shown_old = f"{old[0]} ({short_id(old[1])})" if old else "-"
        shown_new = f"{new[0]} ({short_id(new[1])})" if new else "-"
        rows.append((service, shown_old, "unchanged" if old == new else shown_new))
    applied = [m for m in after.migrations if m not in before.migrations]
    reverted = [m for m in before.migrations if m not in after.migrations]
    lines = [
        f"{title}: MediaCMS {before.version} -> {after.version}; every service is healthy",
        format_table(rows, ("SERVICE", "IMAGE BEFORE", "IMAGE AFTER")),
        f"migrations applied ({len(applied)}): {', '.join(applied) or 'none'}",
    ]
    if reverted:
        lines.append(f"migrations rolled back ({len(reverted)}): {', '.join(reverted)}")
    lines.append(f"backup taken before: {folder}")
    if title == "upgraded":
        lines.append(f"roll back with: invoke upgrade --rollback {folder}")
    return "\n".join(lines)


def maintenance(c: Context, compose: Compose, on: bool) -> None:
    """nginx's 503 page for every request but its health check (read at reload from its
    tmpfs: a new nginx is not in maintenance), or not; nothing to do when no nginx runs."""
    if dry(c) or compose.running(c, "nginx"):
        compose.exec(c, "nginx", MAINTENANCE_COMMAND, "on" if on else "off")


def start_healthy_nginx_last(c: Context, compose: Compose, timeout: int) -> str:
    """:func:`start_healthy` of every service, nginx's container alone and last: an `up`
    stops every container it recreates at once and starts them together, so nginx in a
    larger one would keep the published port closed all that time."""
    behind = [s for s in SERVICES if s != "nginx"]
    return start_healthy(c, compose, timeout, *behind) or start_healthy(c, compose, timeout)


def start_healthy(c: Context, compose: Compose, timeout: int, *services: str,
                  deps: bool = True) -> str:  # fmt: skip
    """``compose up --wait`` of ``services`` (default: all); returns '' when every service
    of the stack is up and healthy, else why not."""
    from .ops import wait_healthy

    result = compose.up(c, *services, timeout=timeout, deps=deps, warn=True)
    if dry(c):
        return ""
    if result is None or not result.ok:
        return _reason(result.stderr if result is not None else "")
    try:
        wait_healthy(c, compose, timeout=timeout)
    except StackError as error:
        return str(error)
    return ""


def _reason(compose_output: str) -> str:
    """The lines of compose's progress output that say what failed."""
    lines = [line.strip() for line in compose_output.splitlines() if line.strip()]
    telling = re.compile(r"didn't complete|unhealthy|error|exited|failed|refused", re.I)
    picked = list(dict.fromkeys(line for line in lines if telling.search(line)))
    return "\n  ".join(picked[-5:] or lines[-3:]) or "compose up failed"
