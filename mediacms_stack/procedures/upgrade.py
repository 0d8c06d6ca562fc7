"""``invoke upgrade``: back up, get the new images, migrate, wait healthy, say what changed.

The steps (:class:`..engines.steps.Steps`: numbered, said and timed as they run), and what
an operator is left with when one fails:

0. keys that newer releases of this stack need (e.g. REDIS_PASSWORD) are added to an
   older .env (:func:`add_missing_keys`); the running stack is not touched.
1. a full backup (database, media, custom/, .env, manifest with the running image ids);
   fails: nothing changed.
2. the new images: built from a MediaCMS tree (``--build``) or pulled, tagged with the
   target version; fails: nothing changed, the stack still runs the old version.
3. the migration gate (:mod:`.gate`): the new images are asked for the migrations they
   would apply to the live database, read-only, and each is classified; the plan, each
   operation with its class and why, is printed. ``--dry-run`` ends here (it shows the
   plan when the new images are on this engine); fails: nothing changed.
4. a stack whose MediaCMS role is still the database's superuser gets a plain role of its
   own (:mod:`.dbrole`); then .env gets MEDIACMS_VERSION=target and the role split's keys
   in one write.
5. the new version goes in, the way the gate chose:
   - zero-downtime (every operation additive): the migrations job of the new version runs
     while the old version serves, then new web containers start beside the old ones,
     which go once the new ones are healthy (:func:`ops.replace_beside`), then the
     workers the same way (the new ones take tasks while the old ones end theirs, their
     warm shutdown), then beat (stop-first: never two) and nginx are recreated;
   - maintenance: nginx answers every request with the 503 page (a flag on its /tmp),
     web, beat and the workers stop, the migrations job runs and they start on the new
     images; nginx is recreated last, once they are healthy: the new nginx has no flag.
   Behind the HTTPS overlay (its listeners hold the ports) nginx, last on both paths, moves
   beside too: the old one ends the responses it is sending while the new one answers.
   Every service must end healthy. Fails: the old version comes back at once, by itself
   (:func:`.rollback.roll_back_failed`): when the plan had migrations, by the whole
   rollback of ``--rollback FOLDER`` (:mod:`.rollback`; the database may be partly
   migrated); when it had none, its images and version only (the data stayed as they
   were, and the old version wrote to them meanwhile). The error
   says why the new version failed and what came back. ``--keep-failed`` leaves the failed
   version as it is, naming the backup of step 1 and ``invoke upgrade --rollback FOLDER``.
6. the summary: version before and after, per service the image (reference and id)
   before and after, the migrations the upgrade applied, the backup and the rollback.
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path

from invoke.context import Context

from ..data import backup, dbrole
from ..engines.compose import Compose
from ..engines.shell import dry, say
from ..engines.steps import Steps
from ..stack import config
from ..stack.config import Settings
from ..stack.errors import StackError
from ..stack.model import APP_SERVICES, PRODUCTION_TARGETS, ImageNames
from . import gate
from .rollback import roll_back_failed
from .transition import current_state, maintenance, start_healthy, summary

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def add_missing_keys(settings: Settings, *, dry_run: bool = False) -> Settings:
    """Give an older .env what .env.example documents and it lacks: empty secrets are
    generated as by ``invoke init`` (e.g. REDIS_PASSWORD), other keys get the example's
    value. Prints the keys, never the values; returns the settings with them."""
    from dotenv import dotenv_values

    example = dotenv_values(config.ROOT / config.EXAMPLE_FILE)
    generated = config.GENERATED
    regenerate = (k for k in generated if k in settings.values and k not in config.FRESH_ONLY)
    keys = [*config.missing_keys(settings), *regenerate]
    added = {}
    for key in keys:
        if key in generated and not settings.get(key):
            added[key] = generated[key]()
        elif key not in settings.values:
            added[key] = example.get(key) or ""
    if added:
        verb = "would add" if dry_run else "adding"
        say(f"{verb} to {settings.env_file}: {', '.join(added)}")
    # a write of its own, before the backup of step 1: compose reads .env from disk and
    # refuses every command (the backup's pg_dump too) while e.g. REDIS_PASSWORD is unset
    return config.update(settings, added, dry_run=dry_run)


def with_version(settings: Settings, version: str) -> Settings:
    return replace(settings, values={**settings.values, "MEDIACMS_VERSION": version})


def _running(c: Context, compose: Compose) -> set[str]:
    return {r.get("Service", "") for r in compose.ps(c, all_=False) if r.get("State") == "running"}


def _failure_report(c: Context, compose: Compose, why: str) -> str:
    """Why the new version failed, the migrations job's last lines and every service's
    state: read while the failed version is still there."""
    from .ops import format_table, status_rows

    logs = compose.run(c, "logs", "--no-color", "--tail", "15", "migrations", hide=True,
                       warn=True, in_stream=False)  # fmt: skip
    tail = logs.stdout.strip() if logs is not None and logs.ok else "(no logs)"
    table = format_table(
        status_rows(c, compose), ("SERVICE", "STATE", "HEALTH", "IMAGE", "VERSION")
    )
    return (f"the new version did not come up healthy:\n  {why}\n\n"
            f"last lines of the migrations job:\n{tail}\n\n{table}")  # fmt: skip


def _left_as_it_failed(report: str, folder: Path, old: str) -> str:
    return (
        f"{report}\n\nLeft as it failed (--keep-failed). The database may already be partly "
        "migrated by the new version. Nothing is lost:\n"
        f"  backup taken before the upgrade (version {old}): {folder}\n"
        f"  see why:   invoke logs --service migrations   (or web)\n"
        f"  roll back: invoke upgrade --rollback {folder}"
    )


def upgrade(
    c: Context,
    compose: Compose,
    settings: Settings,
    *,
    backups: Path,
    to: str | None = None,
    build: bool = False,
    source: str | None = None,
    timeout: int = 300,
    keep_failed: bool = False,
) -> Path:
    """Upgrade the running stack to version ``to`` (default: the current one, re-pulled or
    rebuilt); returns the folder of the backup taken first. A new version that does not
    come up healthy is rolled back at once, unless ``keep_failed``."""
    old = settings.version
    target = to or old
    if not _TAG.fullmatch(target):
        raise StackError(f"{target!r} is not a valid image tag (letters, digits, '_', '.', '-')")
    if not settings.env_file.is_file():
        raise StackError("no .env to record the new version in; run `invoke init` first")
    if not dry(c) and "db" not in _running(c, compose):
        raise StackError("the stack is not running; an upgrade starts with a backup of the "
                         "running database: `invoke up` first")  # fmt: skip
    before = None if dry(c) else current_state(c, compose, settings)

    say(f"MediaCMS {old} -> {target}")
    steps = Steps(5)
    with steps.step("full backup"):
        folder = backup.backup_all(c, compose, settings, backups)

    new = with_version(settings, target)
    how = "build" if build else "pull"
    try:
        with steps.step(f"{how} the images of {target}"):
            missing = _new_images(c, compose, new, how, source)
        with steps.step(f"the migration gate, asked of the images of {target}"):
            if missing:
                print(f"(dry run) cannot ask the images of {target} yet ({missing}): once "
                      "built or pulled, they say which migrations they would apply")  # fmt: skip
                return folder
            plan = gate.ask(c, compose, target)
            say(gate.report(plan))
    except StackError as error:
        raise StackError(
            f"upgrade stopped before changing anything: {error}\n"
            f"The stack still runs {old}. Backup taken: {folder}"
        ) from error
    path = gate.path_of(plan)
    if dry(c):
        print(f"(dry run) would take the {path} path; nothing was changed")
        return folder

    # one write, after the role split committed (its keys must not name a role the database
    # lacks) and before step 5 starts the new images (they must find the version recorded):
    # a failure up to here leaves .env as it was
    with steps.step(f"MEDIACMS_VERSION={target} in {settings.env_file}"):
        changes = {"MEDIACMS_VERSION": target, **dbrole.separate(c, compose, settings)}
        new = config.update(settings, changes)
    with steps.step(f"the {path} path"):
        why = _go_in(c, compose, path, timeout)
        if why:
            report = _failure_report(c, compose, why)
            if keep_failed:
                raise StackError(_left_as_it_failed(report, folder, old))
            say(f"the new version failed; back to {old}, automatically", file=sys.stderr)
            try:
                did = roll_back_failed(c, compose, new, folder, migrated=bool(plan),
                                        backups=backups, timeout=timeout)  # fmt: skip
            except StackError as error:
                raise StackError(f"{report}\n\nThe automatic rollback to {old} failed too: "
                                 f"{error}\n  backup taken before the upgrade: {folder}\n"
                                 f"  roll back: invoke upgrade --rollback {folder}") from error  # fmt: skip
            raise StackError(f"{report}\n\nRolled back to {old} automatically ({did}); every "
                             f"service is healthy. The backup taken before the upgrade: {folder}")  # fmt: skip
    say(summary("upgraded", before, current_state(c, compose, new), folder))
    return folder


def _new_images(c: Context, compose: Compose, new: Settings, how: str,
                source: str | None) -> str:  # fmt: skip
    """Step 2: the images of ``new``'s version built (``how`` is "build") or pulled; returns
    the ones still missing, which only a dry run may leave."""
    from ..images import mediacms
    from .ops import missing_images

    if how == "build":
        mediacms.build(c, new, PRODUCTION_TARGETS, source=source or new.require("MEDIACMS_SOURCE"),
                       ca_bundle=new.get("BUILD_CA_BUNDLE"))  # fmt: skip
    else:
        pulled = compose.run(c, "pull", "--ignore-buildable", env={"MEDIACMS_VERSION": new.version},
                             warn=True)  # fmt: skip
        if pulled is not None and not pulled.ok:
            raise StackError(f"docker compose pull failed: {pulled.stderr.strip()[-800:]}")
    names = ImageNames.from_settings(new)
    refs = [names.ref(t) for t in PRODUCTION_TARGETS]
    try:
        missing = ", ".join(missing_images(refs))
    except StackError as error:  # no engine: a dry run goes on without one
        if not dry(c):
            raise
        missing = str(error)
    if missing and not dry(c):
        raise StackError(f"{missing} not available after the {how}")
    return missing


def _go_in(c: Context, compose: Compose, path: str, timeout: int) -> str:
    """Step 5: the new version in, the gate's way; '' when every service ends up healthy."""
    from .ops import BESIDE, replace_beside

    app = [s for s in APP_SERVICES if s != "nginx"]
    if path == gate.ZERO_DOWNTIME:
        say("migrations of the new version, while the running one serves")
        job = compose.job(c, "migrations", warn=True)
        if not job.ok:
            return f"the migrations job failed (exit {job.exited})"
        for group in BESIDE:
            try:
                replace_beside(c, compose, *group, timeout=timeout)
            except StackError as error:  # the old containers still run, and serve
                return f"the new {' and '.join(group)} containers: {error}"
        moved = {name for group in BESIDE for name in group}
        say("beat on the new image (never two at once)")
        why = start_healthy(c, compose, timeout, *(s for s in app if s not in moved), deps=False)
        gone = ""
    else:
        say("maintenance: every request gets the 503 page until the new version is healthy")
        maintenance(c, compose, on=True)
        compose.run(c, "stop", *app)
        why = start_healthy(c, compose, timeout, *app)
        gone = "; it has no flag: the page goes"
    if why:
        return why
    say(f"nginx on the new image{gone}")
    if compose.https:  # the ports are held for nginx: the new one starts beside the old one
        try:
            replace_beside(c, compose, "nginx", timeout=timeout)
        except StackError as error:
            return f"the new nginx container: {error}"
        return ""
    # nginx alone, last: an `up` stops every container it recreates first and starts them
    # together, so nginx in a larger one would leave its port closed for all that time
    return start_healthy(c, compose, timeout, "nginx", deps=False)
