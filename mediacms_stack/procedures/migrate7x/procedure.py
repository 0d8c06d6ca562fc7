"""migrate-from-7x from end to end: the plan, the checks, then the steps in their order
(:class:`...engines.steps.Steps`), each named and timed in the report
(``backups/migrate-7x-<UTC time>.json``: ``seconds`` by step name, ``total``, the facts)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from invoke.context import Context

from ...data import artifacts
from ...data.database import compare_counts
from ...engines.compose import Compose
from ...engines.shell import dry, say
from ...engines.steps import Steps
from ...stack.config import Settings
from ...stack.model import BACKUPS_DIR
from .carry import carry_settings
from .checks import dry_run_refusals, preflight
from .db import dump_old_database, restore_into_stack
from .legacy import OldDeployment
from .media import copy_media, verify_media
from .plan import make_plan
from .sessions import carry_sessions

LEFT_RUNNING = ("redis",)  # old services not stopped before the copy (besides db)


@dataclass
class Report:
    seconds: dict[str, float] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)


def stop_old_application(c: Context, old: OldDeployment) -> None:
    """Stop the old application containers (not its db and Redis) before the copy."""
    running_app = [s for s in old.running(c) if s not in (old.db_service, *LEFT_RUNNING)]
    if running_app:
        say(f"stopping the old application so nothing changes under the copy: {running_app}")
        old.compose.run(c, "stop", *running_app)


def restore_database(
    c: Context,
    compose: Compose,
    settings: Settings,
    dump: Path,
    *,
    replace: bool,
    old_counts: Mapping[str, int] | None,
) -> int:
    """Restore the dump, compare the row counts with the old database's when it was dumped
    here (a given dump has none); returns the rows restored."""
    new_counts = restore_into_stack(c, compose, settings, dump, replace=replace)
    if old_counts is not None:
        compare_counts(old_counts, new_counts, "in the old database", "in the new one",
                       "row counts differ between the old and the new database")  # fmt: skip
        say(f"row counts match the old database ({len(old_counts)} tables)")
    return sum(new_counts.values())


def write_report(report: Report, settings: Settings, old: OldDeployment) -> None:
    out = (
        artifacts.backup_dir(settings.root / BACKUPS_DIR)
        / f"migrate-7x-{artifacts.utc_stamp()}.json"
    )
    artifacts.write_json(out, {"seconds": report.seconds, **report.facts})
    # each step said its time as it ended: the table again only when debugging
    say("seconds:\n  " + "\n  ".join(f"{k}: {v} s" for k, v in report.seconds.items()),
        detail=True)  # fmt: skip
    say(f"done in {report.seconds['total']} s; report {out}; the old deployment was only "
        f"read: cd {old.tree} && docker compose up -d starts it again")  # fmt: skip


def migrate(c: Context, compose: Compose, settings: Settings, source: Path, *,
            dump: Path | None = None, yes: bool = False,
            new_secret_key: bool = False) -> Report:  # fmt: skip
    report = Report()
    plan = make_plan(c, source, project=compose.project or "", dump=dump,
                     new_secret_key=new_secret_key)  # fmt: skip
    say("plan:\n  " + "\n  ".join(plan.lines(settings)))
    if dry(c):
        refusals = dry_run_refusals(c, plan, compose, settings, yes=yes)
        for line in refusals:
            print(f"(dry run) the real run would refuse: {line}")
        if not refusals:
            print("(dry run) nothing found that the real run would refuse; nothing was changed")
        return report
    replace = preflight(c, plan, compose, settings, yes=yes)
    old, started_all = plan.old, time.monotonic()
    report.facts |= {"media_files": plan.media_files, "media_bytes": plan.media_bytes}

    stop_old_application(c, old)
    steps = Steps(6)  # the names are the report's keys

    old_counts: dict[str, int] | None = None
    with steps.step("dump old database"):
        if dump is None:
            dump, old_counts = dump_old_database(c, old, settings.root / BACKUPS_DIR)

    with steps.step("copy media"):
        copy_seconds = copy_media(c, compose, old.media) if old.media.is_dir() else 0.0
    report.facts["media_copy_mb_per_s"] = round(plan.media_bytes / 1e6 / max(copy_seconds, 1e-3), 1)

    for line in carry_settings(plan, settings, yes=yes):
        say(line)

    with steps.step("restore database"):
        report.facts["rows"] = restore_database(c, compose, settings, dump, replace=replace,
                                                old_counts=old_counts)  # fmt: skip

    with steps.step("carry sessions"):
        report.facts["sessions"] = carry_sessions(c, old, compose, settings)

    with steps.step("start stack and migrate"):
        compose.up(c)

    with steps.step("verify media"):
        checked = verify_media(c, compose, old.media) if old.media.is_dir() else 0
        say(f"{checked} media files verified (sha256, owner 33:33)")
    report.seconds = {**steps.seconds, "total": round(time.monotonic() - started_all, 2)}

    write_report(report, settings, old)
    return report
