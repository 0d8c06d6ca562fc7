"""The migration gate of ``invoke upgrade``: which way the new version goes in.

Before anything changes, the NEW image is asked for the migrations it would apply to the
live database (scripts/migration-plan.py, run with its python in its tree, read-only)
and each operation is classified:

- additive: the running version keeps working beside it (a new table, a column it never
  has to fill, an index, a constraint, options Django keeps to itself). Every migration
  additive: the zero-downtime path, the new version started beside the old one.
- maintenance: destructive (a column or table the running version reads goes or is
  renamed; a column it does not fill becomes required) or opaque (RunPython, RunSQL and
  any operation the gate does not know: it cannot tell what they do). One is enough: the
  maintenance path, every request answered with the 503 page while migrations run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from invoke.context import Context

from ..engines.compose import Compose
from ..stack.config import ROOT
from ..stack.errors import StackError

ADDITIVE = "additive"
MAINTENANCE = "maintenance"
#: The two paths: every operation additive, or at least one that is not.
ZERO_DOWNTIME = "zero-downtime"

#: The script run inside the new image (its text is handed to the image's python).
PLAN_SCRIPT = ROOT / "scripts" / "migration-plan.py"

#: Operations the running version does not notice, and why.
_HARMLESS = {
    "CreateModel": "a new table",
    "AddIndex": "an index",
    "AddIndexConcurrently": "an index, built concurrently",
    "AddConstraint": "a constraint",
    "AlterModelOptions": "no schema change",
    "AlterModelManagers": "no schema change",
}
#: Operations that break the running version, or that the gate cannot read, and why.
_BREAKING = {
    "RemoveField": "drops a column the running version reads",
    "DeleteModel": "drops a table the running version reads",
    "RenameField": "renames a column the running version reads",
    "RenameModel": "renames a table the running version reads",
    "AlterModelTable": "renames a table the running version reads",
    "RunPython": "opaque: Python code the gate cannot read",
    "RunSQL": "opaque: SQL the gate cannot read",
}
_REQUIRED = "a NOT NULL column without a database default: the running version's inserts fail"


@dataclass(frozen=True)
class Step:
    """One operation of the plan: its migration, what it is, its class (verdict) and why."""

    migration: str
    operation: str
    verdict: str
    reason: str


def classify(operation: dict) -> tuple[str, str]:
    """(ADDITIVE or MAINTENANCE, why) of one operation as the plan script describes it."""
    kind = operation.get("type", "?")
    if kind in _HARMLESS:
        return ADDITIVE, _HARMLESS[kind]
    if kind in _BREAKING:
        return MAINTENANCE, _BREAKING[kind]
    if kind == "AddField":
        if operation.get("many_to_many"):
            return ADDITIVE, "a new join table"
        if operation.get("null"):
            return ADDITIVE, "a nullable column"
        if operation.get("db_default"):
            return ADDITIVE, "a column with a database default"
        return MAINTENANCE, _REQUIRED
    if kind == "AlterField":
        if "unreadable" in operation:
            return MAINTENANCE, f"the columns could not be compared ({operation['unreadable']})"
        if operation.get("type_changed"):
            return MAINTENANCE, "changes a column's type"
        tightened = operation.get("was_null") and not operation.get("null")
        if tightened and not operation.get("db_default"):
            return MAINTENANCE, _REQUIRED
        return ADDITIVE, "same column type, no new NOT NULL"
    return MAINTENANCE, f"unknown operation {kind}: the gate cannot tell what it does"


def _name(operation: dict) -> str:
    """``AddField media.note``, ``RenameField media.title->name``, ``RunPython``."""
    kind = operation.get("type", "?")
    target = operation.get("model", "")
    if "old_name" in operation:
        renamed = f"{operation['old_name']}->{operation.get('new_name', '?')}"
        target = f"{target}.{renamed}" if target else renamed
    elif "field" in operation:
        target += f".{operation['field']}"
    return f"{kind} {target}".strip()


def steps(plan: list[dict]) -> list[Step]:
    """The plan script's output, one Step per operation (a migration without any: one)."""
    found = []
    for migration in plan:
        name = migration["migration"]
        for operation in migration["operations"]:
            found.append(Step(name, _name(operation), *classify(operation)))
        if not migration["operations"]:
            found.append(Step(name, "(no operation)", ADDITIVE, "changes nothing"))
    return found


def path_of(plan: list[Step]) -> str:
    """ZERO_DOWNTIME or MAINTENANCE."""
    return MAINTENANCE if any(s.verdict == MAINTENANCE for s in plan) else ZERO_DOWNTIME


def report(plan: list[Step]) -> str:
    """The plan as printed before anything changes: each operation, its class and why."""
    from .ops import format_table

    if not plan:
        return "no migration to apply: the zero-downtime path"
    rows = [(s.migration, s.operation, s.verdict, s.reason) for s in plan]
    table = format_table(rows, ("MIGRATION", "OPERATION", "CLASS", "WHY"))
    if path_of(plan) == ZERO_DOWNTIME:
        way = "every operation is additive: the zero-downtime path"
    else:
        first = next(s for s in plan if s.verdict == MAINTENANCE)
        way = f"the maintenance path ({first.migration}: {first.operation}, {first.reason})"
    migrations = len({s.migration for s in plan})
    return f"{migrations} migration(s) to apply:\n{table}\n{way}"


def ask(c: Context, compose: Compose, version: str) -> list[Step]:
    """The plan of the images of ``version`` for the live database (read-only, also in a
    dry run); StackError with the script's last lines when it cannot be read."""
    done = compose.job(c, "migrations", "python", "-c", PLAN_SCRIPT.read_text(), query=True,
                       env={"MEDIACMS_VERSION": version})  # fmt: skip
    lines = done.stdout.strip().splitlines() if done is not None else []
    if done is None or not done.ok or not lines:
        tail = (done.stderr if done is not None else "").strip().splitlines()[-8:]
        raise StackError("could not read the migration plan from the images of "
                         f"{version}:\n  " + "\n  ".join(tail or ["(no output)"]))  # fmt: skip
    try:
        return steps(json.loads(lines[-1]))
    except (ValueError, KeyError, TypeError) as error:
        raise StackError(f"the migration plan of {version} is not what the gate reads: "
                         f"{error}: {lines[-1][:300]}") from None  # fmt: skip
