"""What would make the migration refuse, looked at before anything is stopped or written
(the real run), or without writing anything at all (the dry run)."""

from __future__ import annotations

from invoke.context import Context

from ...engines.compose import Compose
from ...stack.config import Settings
from ...stack.errors import StackError
from .carry import settings_conflict
from .db import new_database_rows
from .media import media_volume_empty
from .plan import Plan


def preflight(c: Context, plan: Plan, compose: Compose, settings: Settings, *, yes: bool) -> bool:
    """Everything that could refuse, checked before anything is stopped or written.

    Returns whether the new database already holds data (to be replaced, with --yes).
    """
    settings_conflict(plan, settings, yes=yes)
    refusals, rows = stack_refusals(c, compose, settings, yes=yes, start=True)
    if refusals:
        raise StackError(refusals[0])
    return bool(rows)


def stack_refusals(
    c: Context, compose: Compose, settings: Settings, *, yes: bool, start: bool
) -> tuple[list[str], int]:
    """Why the new stack's data may not be replaced without --yes; and its row count.
    ``start``: start the new db first (a dry run only looks at a running one)."""
    refusals = []
    if not media_volume_empty(c, compose) and not yes:
        refusals.append("the new media volume is not empty; pass --yes to copy over it")
    rows = new_database_rows(c, compose, settings, start=start)
    if rows and not yes:
        refusals.append(f"the new database already holds {rows} rows; pass --yes to replace "
                        "them (a safety backup is taken first)")  # fmt: skip
    return refusals, rows


def dry_run_refusals(
    c: Context, plan: Plan, compose: Compose, settings: Settings, *, yes: bool
) -> list[str]:
    """What :func:`preflight` would refuse, found without writing anything: the new
    stack's volumes are looked into only when it runs (no volume or container is made)."""
    from ...engines.engine import engine_answers

    refusals = []
    try:
        settings_conflict(plan, settings, yes=yes)
    except StackError as error:
        refusals.append(str(error))
    if not engine_answers():
        print("(dry run) no Docker engine answers: the new stack's volumes were not checked")
        return refusals
    if "db" not in {r.get("Service") for r in compose.ps(c, all_=False)}:
        print("(dry run) the new stack is not running: its volumes were not checked")
        return refusals
    return refusals + stack_refusals(c, compose, settings, yes=yes, start=False)[0]
