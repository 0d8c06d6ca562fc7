"""``invoke upgrade-postgres``: the cluster moved to a newer PostgreSQL major in a new
volume, checked, and the stack started on it; ``--rollback`` returns to the old volume.

Dump and restore (:mod:`..data.pgmajor`), not pg_upgrade: pg_upgrade needs the old and the
new major's binaries in one image, and neither the official images nor Debian's releases
(bookworm ships 15, trixie 17) have two; a restore also builds every index anew under the
new image's C library, so no index is left sorted by an older collation.

The steps (:class:`..engines.steps.Steps`: numbered, said and timed as they run), and what
an operator is left with when one fails:

1. the plan (read only): the live volume's major, the image's, the old image to read it
   with, the new volume's name; refused when the new volume exists or the image's major is
   older; "already on" when they are the same (nothing changes).
2. web, the workers and beat stop (nginx answers 503), then db.
3. the old cluster runs in a one-off container of the old image, the new one (empty) in
   one of the new image; roles, then each database copied; collation versions refreshed,
   statistics rebuilt; checked: roles, extensions, row counts per table, logins with
   .env's passwords. A failure here: both one-offs stop, then the steps are undone, the
   last first: the new volume is removed, the stack starts on the old volume as before;
   .env untouched.
4. .env: POSTGRES_VOLUME and POSTGRES_IMAGE name the new ones, POSTGRES_PREVIOUS_* the old;
   the stack starts and is waited for until healthy, ``migrate --check`` passes, the site
   answers. A failure here names ``invoke upgrade-postgres --rollback``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from invoke.context import Context

from ..data import dbrole, pgmajor
from ..engines.compose import Compose
from ..engines.shell import dry, run, say, wait_until
from ..engines.steps import Steps
from ..stack import config
from ..stack.config import Settings
from ..stack.errors import StackError
from ..stack.model import APP_SERVICES, DB_VOLUME, db_volume, volume_name
from .transition import start_healthy

#: Stopped while the cluster is copied; nginx keeps answering (the 503 page).
STOPPED = tuple(s for s in APP_SERVICES if s != "nginx")


def volume_exists(c: Context, name: str) -> bool:
    done = run(c, ["docker", "volume", "inspect", name], query=True, hide=True, warn=True,
               in_stream=False)  # fmt: skip
    return done.ok


def remove_volume(c: Context, name: str) -> str:
    """Remove a volume the upgrade made (its one-off container may take a moment to go);
    returns what happened, for the operator."""
    try:
        wait_until(lambda: not volume_exists(c, name) or run(c, ["docker", "volume", "rm", name],
                   hide=True, warn=True, in_stream=False).ok, timeout=30, interval=2,
                   what=f"volume {name} was not removed")  # fmt: skip
    except StackError as error:
        return f"{error}: remove it with `docker volume rm {name}`"
    return f"the new volume {name} is gone"


def superuser(settings: Settings) -> tuple[str, str]:
    """The cluster's superuser and its password, as .env names them (a stack from before
    the role split has one role, MediaCMS's, which is the superuser)."""
    if dbrole.is_separate(settings):
        return settings.get("POSTGRES_SUPERUSER"), settings.get("POSTGRES_SUPERUSER_PASSWORD")
    return settings.get("POSTGRES_USER", "mediacms"), settings.require("POSTGRES_PASSWORD")


def old_image_for(image: str, major: str) -> str:
    """``image`` with its tag's leading major replaced: postgres:17 -> postgres:15,
    mediacms-local/postgres:17 -> mediacms-local/postgres:15."""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag or not tag[:1].isdigit():
        raise StackError(f"cannot tell the PostgreSQL {major} image from {image!r} (its tag does "
                         "not start with the major): name it with --old-image")  # fmt: skip
    return f"{name}:{major}{tag.lstrip('0123456789')}"


@dataclass(frozen=True)
class Plan:
    project: str
    live: str  # POSTGRES_VOLUME now
    target: str  # POSTGRES_VOLUME after
    old_major: str
    new_major: str
    old_image: str
    image: str

    def lines(self) -> list[str]:
        old, new = volume_name(self.project, self.live), volume_name(self.project, self.target)
        return [
            f"PostgreSQL {self.old_major} -> {self.new_major}",
            f"volume   {old} ({self.old_major}) -> {new} (new); {old} is kept",
            f"images   {self.old_image} reads the old cluster, {self.image} runs the new one",
            f"stops    {', '.join(STOPPED)} and db while it copies (nginx answers 503)",
            "copies   the roles (pg_dumpall --roles-only), each database (pg_dump | "
            "pg_restore --create)",
            "then     refreshes collation versions, vacuumdb --all --analyze-in-stages; checks "
            "roles, logins, extensions, row counts per table",
            f".env     POSTGRES_VOLUME={self.target} POSTGRES_IMAGE={self.image} "
            f"POSTGRES_PREVIOUS_VOLUME={self.live} POSTGRES_PREVIOUS_IMAGE={self.old_image}",
            "finally  starts the stack, waits until healthy, migrate --check, the site answers",
            "undo     invoke upgrade-postgres --rollback",
        ]


def make_plan(c: Context, settings: Settings, image: str, old_image: str | None) -> Plan | None:
    """What the upgrade would do; None (and why, printed) when there is nothing to do."""
    live = db_volume(settings)
    live_name = volume_name(settings.project, live)
    if not volume_exists(c, live_name):
        raise StackError(f"volume {live_name} (POSTGRES_VOLUME) does not exist: no cluster to "
                         "upgrade; nothing was changed")  # fmt: skip
    new_major = pgmajor.image_major(c, image)
    old_major = pgmajor.data_major(c, image, live_name)
    if old_major == new_major:
        say(f"already on PostgreSQL {new_major}: volume {live_name} holds a {old_major} "
            f"cluster and {image} runs {new_major}; nothing to do, nothing was changed")  # fmt: skip
        return None
    if int(old_major) > int(new_major):
        raise StackError(f"volume {live_name} holds PostgreSQL {old_major}, newer than {image} "
                         f"({new_major}): a major cannot go down; nothing was changed")  # fmt: skip
    target = f"{DB_VOLUME}_{new_major}"
    if volume_exists(c, volume_name(settings.project, target)):
        raise StackError(f"volume {volume_name(settings.project, target)} exists already (left "
                         "by an upgrade that was rolled back?): remove it with `docker volume rm "
                         f"{volume_name(settings.project, target)}` if you no longer need it, "
                         "then run this again; nothing was changed")  # fmt: skip
    current = settings.get("POSTGRES_IMAGE", "postgres:17")
    reader = old_image or (current if current != image else old_image_for(image, old_major))
    if pgmajor.image_major(c, reader) != old_major:
        raise StackError(f"{reader} does not run PostgreSQL {old_major}, the major of "
                         f"{live_name}: name one that does with --old-image")  # fmt: skip
    return Plan(settings.project, live, target, old_major, new_major, reader, image)


def check_site(c: Context, compose: Compose, settings: Settings) -> None:
    """``migrate --check`` in web (MediaCMS's role logs in; no migration is missing) and
    the home page through nginx, under the site's public name."""
    checked = compose.manage(c, "migrate", "--check", hide=True, warn=True, in_stream=False)
    if not checked.ok:
        raise StackError(f"manage.py migrate --check failed: "
                         f"{(checked.stderr or checked.stdout).strip()[-500:]}")  # fmt: skip
    host = urlsplit(settings.get("FRONTEND_HOST", "http://localhost")).netloc or "localhost"
    page = compose.exec(c, "nginx", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                        "-H", f"Host: {host}", "http://127.0.0.1:8080/", hide=True, warn=True,
                        in_stream=False)  # fmt: skip
    if page.stdout.strip() != "200":
        raise StackError(f"the site answered {page.stdout.strip() or page.stderr.strip()!r} "
                         "instead of 200 on /")  # fmt: skip
    say("migrate --check passed; the site answers 200 on /")


def _copy(c: Context, compose: Compose, settings: Settings, plan: Plan) -> list[str]:
    """Steps 2 and 3: both clusters in one-off containers, the copy, the checks."""
    name, password = superuser(settings)
    old = pgmajor.Cluster(compose, plan.old_image, plan.live,
                          f"{plan.project}-pg{plan.old_major}-old", name)  # fmt: skip
    new = pgmajor.Cluster(compose, plan.image, plan.target,
                          f"{plan.project}-pg{plan.new_major}-new", name)  # fmt: skip
    try:
        old.start(c, new=False)
        try:
            bootstrap = old.query(c, pgmajor.BOOTSTRAP_SQL)
        except StackError as error:  # .env names a role the cluster does not have
            bootstrap = [str(error)]
        if bootstrap != [name]:
            raise StackError(f"the old cluster's superuser is not {name!r}, the one .env names: "
                             f"{bootstrap[0]}")  # fmt: skip
        databases = old.query(c, pgmajor.DATABASES_SQL)
        counts = {db: old.db(db).row_counts(c) for db in databases}
        new.start(c, new=True)
        pgmajor.copy_roles(c, old, new)
        for database in databases:
            say(f"copying database {database}")
            pgmajor.copy_database(c, old, new, database)
        pgmajor.refresh_and_analyze(c, new)
        checked = pgmajor.verify(c, old, new, databases, counts)
        logins = {name: (pgmajor.MAINTENANCE_DB, password)}
        if dbrole.is_separate(settings):
            app = settings.get("POSTGRES_USER", "mediacms")
            logins[app] = (
                settings.get("POSTGRES_DB", "mediacms"),
                settings.get("POSTGRES_PASSWORD"),
            )
        for role, (database, secret) in logins.items():
            pgmajor.login(c, old, new, role, secret, database)
        checked.append(f"logins with .env's passwords: {', '.join(logins)}")
        return checked
    finally:
        new.stop(c)
        old.stop(c)


def upgrade_postgres(
    c: Context,
    compose: Compose,
    settings: Settings,
    *,
    image: str | None = None,
    old_image: str | None = None,
    timeout: int = 300,
) -> None:
    """The cluster to ``image``'s major (default POSTGRES_IMAGE) in a new volume: the steps
    of the module's docstring."""
    image = image or settings.get("POSTGRES_IMAGE", "postgres:17")
    steps = Steps(4)
    with steps.step("the plan: the live cluster's major and the image's"):
        plan = make_plan(c, settings, image, old_image)
        if plan is None:
            return
        say("plan:\n  " + "\n  ".join(plan.lines()))
        if dry(c):
            print("(dry run) nothing was changed")
            return
    started = time.monotonic()
    target = volume_name(plan.project, plan.target)
    with steps.step(f"{', '.join(STOPPED)} stopped (nginx answers 503), then db"):
        compose.run(c, "stop", *STOPPED)
        compose.run(c, "stop", "db")
        steps.on_failure("the stack", lambda: _restart(c, compose, timeout))
    try:
        with steps.step(f"the cluster copied into {target} and checked"):
            steps.on_failure("the new volume", lambda: remove_volume(c, target))
            checked = _copy(c, compose, settings, plan)
            say("checked:\n  " + "\n  ".join(checked))
    except BaseException as error:
        said = steps.undone  # what the undos did: both run unless one of them failed
        raise StackError(f"the upgrade stopped before the switch: {error}\n"
                         f"{said.get('the new volume')}; .env is unchanged; the stack "
                         f"{said.get('the stack')}") from error  # fmt: skip
    steps.commit()  # from here on, the new volume is the one to keep
    copied = time.monotonic() - started
    with steps.step(f"the switch: .env names {target}, the stack starts on it, checked"):
        new = config.update(settings, {
            "POSTGRES_VOLUME": plan.target, "POSTGRES_IMAGE": plan.image,
            "POSTGRES_PREVIOUS_VOLUME": plan.live, "POSTGRES_PREVIOUS_IMAGE": plan.old_image,
        })  # fmt: skip
        say(f"{settings.env_file}: POSTGRES_VOLUME={plan.target} POSTGRES_IMAGE={plan.image}")
        _start_and_check(c, compose, new, timeout, undo="invoke upgrade-postgres --rollback")
    old_name = volume_name(plan.project, plan.live)
    say(f"done: PostgreSQL {plan.old_major} -> {plan.new_major} in "
        f"{time.monotonic() - started:.1f} s (copy and checks {copied:.1f} s)\n"
        f"  the old cluster stays in {old_name}: `invoke upgrade-postgres --rollback` returns "
        f"to it (what changed since is lost there);\n  remove it when you are satisfied: "
        f"docker volume rm {old_name}")  # fmt: skip


def _restart(c: Context, compose: Compose, timeout: int) -> str:
    """The stack started again after a failed copy (on the old volume: .env still names
    it); says how that went."""
    why = start_healthy(c, compose, timeout)
    return f"started on the old volume, not healthy: {why}" if why else "runs on it again"


def _start_and_check(c: Context, compose: Compose, settings: Settings, timeout: int, *,
                     undo: str) -> None:  # fmt: skip
    why = start_healthy(c, compose, timeout)
    try:
        if why:
            raise StackError(f"the stack is not healthy: {why}")
        check_site(c, compose, settings)
    except StackError as error:
        raise StackError(f"{error}\n.env names volume {db_volume(settings)} now; the previous "
                         f"one is untouched: {undo}") from error  # fmt: skip


def rollback_postgres(c: Context, compose: Compose, settings: Settings, *, timeout: int = 300):
    """Back to the volume and image upgrade-postgres recorded; the newer volume is kept."""
    previous, image = (
        settings.get("POSTGRES_PREVIOUS_VOLUME"),
        settings.get("POSTGRES_PREVIOUS_IMAGE"),
    )
    if not previous or not image:
        raise StackError("nothing to roll back: .env records no POSTGRES_PREVIOUS_VOLUME and "
                         "POSTGRES_PREVIOUS_IMAGE (a successful upgrade-postgres sets them); "
                         "nothing was changed")  # fmt: skip
    name, current = volume_name(settings.project, previous), db_volume(settings)
    if not volume_exists(c, name):
        raise StackError(f"the previous volume {name} is gone; nothing was changed")
    say(f"rollback: volume {volume_name(settings.project, current)} -> {name}, image "
        f"{settings.get('POSTGRES_IMAGE')} -> {image}; what changed since the upgrade is not "
        "in the old volume")  # fmt: skip
    if dry(c):
        print("(dry run) nothing was changed")
        return
    steps = Steps(2)
    with steps.step(f"{settings.env_file} names {name} again"):
        back = config.update(settings, {"POSTGRES_VOLUME": previous, "POSTGRES_IMAGE": image,
                                        "POSTGRES_PREVIOUS_VOLUME": "",
                                        "POSTGRES_PREVIOUS_IMAGE": ""})  # fmt: skip
    with steps.step("the stack started on it and checked"):
        _start_and_check(c, compose, back, timeout, undo=f"set POSTGRES_VOLUME={current} and "
                         f"POSTGRES_IMAGE={settings.get('POSTGRES_IMAGE')} in .env to go forward")  # fmt: skip
    kept = volume_name(settings.project, current)
    say(f"rolled back to {name}; {kept} is kept (upgrade-postgres needs it gone before it "
        f"runs again): docker volume rm {kept}")  # fmt: skip
