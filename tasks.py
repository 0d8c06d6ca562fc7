"""Operations on a MediaCMS stack: `invoke --list` is the index, `invoke --help TASK` the manual.

Every task prints the docker/compose commands it runs; `--dry-run` prints them only.
The work is done by the mediacms_stack package; these functions only wire arguments.
Which .env is used: ./.env, or the file named by MEDIACMS_ENV_FILE.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from pathlib import Path

from invoke import Collection, Exit, Task
from invoke import task as invoke_task

from mediacms_stack.data import backup as backups
from mediacms_stack.data import offsite as offsites
from mediacms_stack.data import restore as restores
from mediacms_stack.engines import engine as engines
from mediacms_stack.engines import shell
from mediacms_stack.engines.compose import Compose, uses_https
from mediacms_stack.images import bootstrap, mediacms
from mediacms_stack.procedures import dev as devstack
from mediacms_stack.procedures import doctor as checks
from mediacms_stack.procedures import encodings as encodes
from mediacms_stack.procedures import health, mail, ops
from mediacms_stack.stack import config, lock, model
from mediacms_stack.stack.errors import StackError

BACKUPS = config.home() / model.BACKUPS_DIR


def _settings() -> config.Settings:
    return config.load(config.home(), os.environ.get("MEDIACMS_ENV_FILE"))


def _stack(c, *, dev: bool = False, https: bool = False, metrics: bool = False,
           needs=("env",), swarm: bool = False):  # fmt: skip
    """Settings and compose of the stack the task of context ``c`` drives; a dry run
    needs neither engine nor compose plugin (it runs nothing).

    A deployment on Swarm (see swarm.deployed_on_swarm) is driven only by the tasks that
    say ``swarm`` (backups, restores, manage, shells); the others refuse it.
    """
    from mediacms_stack.engines import swarm as swarms

    settings = _settings()
    needs = tuple(n for n in needs if not (shell.dry(c) and n in ("engine", "compose")))
    if needs:
        checks.require(c, settings, *needs)
    if not dev and swarms.deployed_on_swarm(settings):
        if not swarm:
            raise StackError(f"this deployment runs on Swarm ({swarms.ORCHESTRATOR}=swarm in "
                             ".env): use the swarm.* tasks; nothing was changed")  # fmt: skip
        return settings, swarms.SwarmStack.connect(c, settings)
    return settings, Compose.for_settings(settings, dev=dev, https=https, metrics=metrics,
                                          writes=not shell.dry(c))  # fmt: skip


#: The only short flags, one meaning each across every task (-h stays invoke's help;
#: one-letter options such as admin-shell's -c are their own short form).
SHORT_FLAGS = {"dry_run": "n", "yes": "y"}


#: Help of the options that mean the same in every task that has them, written once here;
#: a task's own ``help=`` text for one of them replaces it only where the task differs.
COMMON_HELP = {
    "dry_run": "print the plan and the commands only; change nothing, need no engine "
    "(Default: off)",
    "dest": "folder to write the backups to (Default: backups/ in the deployment folder)",
}
#: The development stack's dry runs ask the engine which images are missing.
DEV_DRY_RUN = ("print the plan and the commands only; change nothing, but ask the engine which "
               "images are missing (Default: off)")  # fmt: skip


class StackTask(Task):
    """A task whose only short flags are :data:`SHORT_FLAGS`."""

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        if name in SHORT_FLAGS:
            opts["names"] = [*opts["names"], SHORT_FLAGS[name]]
        return opts


def typed_name(body) -> str:
    """The name an operator types to run the task ``body`` is the body of (``upgrade``,
    ``backup-db``, ``dev``, ``swarm.deploy``, ``images.bootstrap-images``): the operation
    the stack's lock records and the tag of what the task prints."""
    for name in ns.task_names:
        if getattr(ns[name].body, "__wrapped__", None) is body:
            return name
    return body.__name__.replace("_", "-")  # a task outside the collection


def task(*args, exclusive=False, **kwargs):
    """invoke's @task, plus: a StackError ends the task with one `error:` line, status 1;
    ``exclusive``: the task holds the stack's lock (:mod:`mediacms_stack.stack.lock`) unless it
    is a dry run; ``--dry-run`` is put on the context once, as invoke's ``run.dry``, for
    every command the task runs (see :func:`shell.dry`); what the package says is tagged
    with the task's name (``[upgrade] ...``, :func:`typed_name`); `invoke --echo TASK` (or MEDIACMS_VERBOSE=1) prints whole commands;
    the options of :data:`COMMON_HELP` get its help unless ``help`` gives their own.

    StackError is what the package raises for anything an operator can act on (the
    message says what went wrong and the fix), so no task needs its own try/except.
    """

    def decorate(body):
        @functools.wraps(body)
        def guarded(c, *a, **kw):
            shell.set_verbose(bool(c.config.run.echo) or os.environ.get("MEDIACMS_VERBOSE") == "1")
            name = typed_name(body)
            outer = shell.set_task(name)
            was_dry = shell.set_dry(c, shell.dry(c) or bool(kw.get("dry_run")))
            try:
                if exclusive and not kw.get("dry_run"):
                    with lock.exclusive(_settings(), name):
                        return body(c, *a, **kw)
                return body(c, *a, **kw)
            except StackError as error:
                raise Exit(f"error: {error}", code=1) from error
            finally:
                shell.set_task(outer)
                shell.set_dry(c, was_dry)

        params = inspect.signature(body).parameters
        common = {name: text for name, text in COMMON_HELP.items() if name in params}
        options = {**kwargs, "help": {**common, **kwargs.get("help", {})}}
        return invoke_task(*args, klass=StackTask, auto_shortflags=False, **options)(guarded)

    if len(args) == 1 and callable(args[0]) and not kwargs:
        body, args = args[0], ()
        return decorate(body)
    return decorate


# --- setting up ------------------------------------------------------------------------
@task
def engine(c):
    """Provide a Docker engine and compose v2 (installs Debian's docker.io if none runs)."""
    engines.ensure(c)


@task(help={
    "force": "re-create the base image even if its recipe is unchanged, and the tool "
    "images (restic, metrics, the HTTPS front) on it (Default: off)",
    "old_postgres": "only build a stand-in for an older PostgreSQL major, 15 or 13 "
    "(Default: none, build them all)",
})  # fmt: skip
def bootstrap_images(c, force=False, old_postgres=None):
    """Build the Debian base, the PostgreSQL/Redis/Node stand-ins and our images of Debian
    packages (restic, metrics, the HTTPS overlay's front) without any registry."""
    if old_postgres:
        bootstrap.old_postgres(c, config.ROOT, old_postgres, force=force)
    else:
        bootstrap.all_images(c, config.ROOT, force=force, tools=True)


@task(help={
    "force": "replace an existing .env (Default: off)",
    "local_images": "use the stand-in images made by `invoke images.bootstrap-images` "
    "(Default: off)",
    "set": "extra KEY=VALUE pairs for .env, repeatable (Default: none)",
}, iterable=["set"])  # fmt: skip
def init(c, force=False, local_images=False, set=None):
    """Write .env from .env.example with random secrets (mode 600)."""
    overrides = dict(bootstrap.LOCAL_IMAGES) if local_images else {}
    for pair in set or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise Exit(f"error: --set {pair!r}: expected KEY=VALUE")
        overrides[key] = value
    target = os.environ.get("MEDIACMS_ENV_FILE", config.ENV_FILE)
    path = config.init(
        config.home(),
        overrides,
        env_file=target,
        force=force,
        example=config.ROOT / config.EXAMPLE_FILE,
    )
    print(f"wrote {path} (mode 600)")
    print("next: `invoke up` builds or pulls the images, starts the stack and prints its URL "
          "and admin login (`invoke doctor` checks this machine first)")  # fmt: skip


@task(
    help={
        "https": "check the HTTPS overlay's .env keys, name and ports 80/443 instead "
        "(Default: off; on when HTTPS_OVERLAY=true in .env)",
        "email": "instead, send a test message to this address through the site's SMTP "
        "settings, from inside the running web container, and name the step that fails "
        "(Default: none)",
        "dry_run": "with --email: print what it would send and the command, send nothing "
        "(the checks themselves change nothing) (Default: off)",
    }
)
def doctor(c, https=False, email=None, dry_run=False):
    """Checks before impact: engine, compose, ports, disk, .env, custom/, images, volumes."""
    if email is not None:
        _, compose = _stack(c, swarm=True)
        print("\n".join(mail.send_test(c, compose, email)))
        return
    settings = _settings()
    https = https or uses_https(settings)
    results = checks.run_checks(c, settings, checks.HTTPS if https else checks.PLAIN)
    print(checks.table(results))
    if not all(r.ok for r in results):
        raise Exit(code=1)


# --- images ----------------------------------------------------------------------------
@task(help={
    "target": "web, worker, worker-full, dev or nginx, repeatable (Default: all)",
    "source": "MediaCMS tree: PATH or GIT_URL@REF (Default: MEDIACMS_SOURCE)",
    "ca_bundle": "CA bundle for pip/npm in the build (Default: BUILD_CA_BUNDLE)",
    "cold": "use no layer or pip cache, as a fresh machine builds (Default: off)",
}, iterable=["target"])  # fmt: skip
def build(c, target=None, source=None, ca_bundle=None, cold=False, dry_run=False):
    """Build our images with immutable version tags from a MediaCMS tree, pinned by its lock."""
    settings = _settings()
    if not dry_run:
        engines.ensure(c)
    built = mediacms.build(
        c,
        settings,
        target or mediacms.TARGETS,
        source=source or settings.require("MEDIACMS_SOURCE"),
        ca_bundle=ca_bundle if ca_bundle is not None else settings.get("BUILD_CA_BUNDLE"),
        cold=cold,
    )
    print("built:", *built, sep="\n  ")


@task(name="lock", help={
    "source": "MediaCMS tree: PATH or GIT_URL@REF (Default: MEDIACMS_SOURCE)",
    "ca_bundle": "CA bundle for pip in the build (Default: BUILD_CA_BUNDLE)",
})  # fmt: skip
def relock(c, source=None, ca_bundle=None, dry_run=False):
    """Re-resolve the tree's Python requirements into constraints/mediacms/ and show the diff."""
    settings = _settings()
    if not dry_run:
        engines.ensure(c)
    mediacms.relock(
        c,
        settings,
        source=source or settings.require("MEDIACMS_SOURCE"),
        ca_bundle=ca_bundle if ca_bundle is not None else settings.get("BUILD_CA_BUNDLE"),
    )


@task(iterable=["target"], help={
    "target": "web, worker, worker-full, dev or nginx, repeatable (Default: all)",
    "dry_run": "print the tags and pushes only; the local images are still looked up, so "
    "it needs the engine (Default: off)",
})  # fmt: skip
def push(c, target=None, dry_run=False):
    """Push the version-tagged images to IMAGE_REGISTRY (tagging images built without it)."""
    mediacms.push(c, _settings(), target or mediacms.TARGETS)


@task
def pull(c, dry_run=False):
    """Pull the stack's images from their registries."""
    _, compose = _stack(c)
    compose.run(c, "pull", "--ignore-buildable")


# --- running ---------------------------------------------------------------------------
@task(exclusive=True, help={
    "dev": "the development stack (same as `invoke dev`) (Default: off)",
    "https": "add docker-compose-cert.yaml (nginx ends TLS, certificates over ACME) and record "
    "HTTPS_OVERLAY=true in .env, so later tasks include it "
    "(Default: off; on when HTTPS_OVERLAY=true in .env)",
    "metrics": "add docker-compose-metrics.yaml (Prometheus on 127.0.0.1:METRICS_PORT, "
    "exporters for nginx, PostgreSQL, Redis and the Celery queues) and record "
    "METRICS_OVERLAY=true in .env, so later tasks include it (Default: off)",
    "dry_run": "print the plan and the commands only; change nothing, need no engine (with "
    "--dev, ask the engine which images are missing) (Default: off)",
})  # fmt: skip
def up(c, dev=False, https=False, metrics=False, dry_run=False):
    """Start the stack (building or bootstrapping missing images) and wait until healthy."""
    if dev:
        return dev_stack(c, dry_run=dry_run)
    if not dry_run:
        engines.ensure(c)
    https = https or uses_https(_settings())  # HTTPS_OVERLAY=true in .env
    https_needs = ("https-env", "https-ports") if https else ()
    needs = ("env", "custom", "numbers", "proxies", *https_needs)
    settings, compose = _stack(c, https=https, metrics=metrics, needs=needs)
    if metrics:
        settings = ops.enable_metrics(c, settings)
    if https:
        settings = ops.enable_https(c, settings)
    ops.ensure_images(c, settings)
    compose.up(c)
    if https and not uses_https(settings) and not dry_run:  # recorded once it came up
        config.update(settings, {"HTTPS_OVERLAY": "true"})
        shell.say(f"HTTPS_OVERLAY=true in {settings.env_file}: upgrade, restart, logs and "
                  "down include the HTTPS overlay from now on")  # fmt: skip
    if not dry_run:
        print(ops.welcome(settings))


@task(exclusive=True, name="dev", help={
    "build": "rebuild the dev image from MEDIACMS_TREE (after its requirements changed) "
    "(Default: off)",
    "timeout": "seconds to wait for every service to be healthy (first npm install is slow) "
    "(Default: 900)",
    "dry_run": DEV_DRY_RUN,
})  # fmt: skip
def dev_stack(c, build=False, timeout=900, dry_run=False):
    """Development stack: MEDIACMS_TREE mounted, runserver :8000, Celery, frontend :8088."""
    if not dry_run:
        engines.ensure(c)
    settings, compose = _stack(c, dev=True, needs=("env", "custom"))
    devstack.up(c, settings, compose, build=build, timeout=timeout)


@task(exclusive=True, help={
    "dev": "the development stack (`invoke dev`) instead (Default: off)",
    "https": "include the HTTPS overlay, docker-compose-cert.yaml "
    "(Default: off; on when HTTPS_OVERLAY=true in .env)",
    "volumes": "also delete the named volumes (data loss!) (Default: off)",
})  # fmt: skip
def down(c, dev=False, https=False, volumes=False, dry_run=False):
    """Stop and remove the stack's containers (volumes kept unless --volumes)."""
    _, compose = _stack(c, dev=dev, https=https)
    compose.run(c, "down", *(["--volumes"] if volumes else []))


@task(exclusive=True, iterable=["service"], help={
    "service": "a service to restart, repeatable; web is restarted one container at a time, "
    "failing no request (a spare runs while a lone one restarts), and behind the HTTPS "
    "overlay nginx gets a new container beside the old one, which ends its responses "
    "first (Default: all, at once)",
    "timeout": "seconds to wait for each web container to be healthy again (Default: 300)",
})  # fmt: skip
def restart(c, service=None, timeout=300, dry_run=False):
    """Restart services (default: all at once); web one container at a time, failing none."""
    settings, compose = _stack(c)
    ops.restart(c, compose, settings, service or [], timeout=timeout)


STUCK_HELP = (
    "minutes a running encoding may go without an update before it counts as "
    f"stuck (Default: {encodes.STUCK_AFTER_MINUTES}, MediaCMS's task time limit)"
)


@task(help={
    "dev": "the development stack's containers instead, the services' table only "
    "(Default: off)",
    "json_": "print the report as JSON, for scripts and monitoring (Default: off)",
    "stuck_after": STUCK_HELP,
    "backups": "the folder the backups are in (Default: backups/ in the deployment folder)",
})  # fmt: skip
def status(c, dev=False, json_=False, stuck_after=encodes.STUCK_AFTER_MINUTES,
           backups=str(BACKUPS)):  # fmt: skip
    """Services, Celery queues, encodings, volumes and free space, last backups, version;
    exits 1 when something needs looking at. On Swarm, what runs in tasks on other nodes
    than DOCKER_HOST's is read where the report says."""
    if dev:
        _, compose = _stack(c, dev=dev)
        rows = ops.status_rows(c, compose)
        print(ops.format_table(rows, ("SERVICE", "STATE", "HEALTH", "IMAGE", "VERSION")))
        return
    settings, compose = _stack(c, swarm=True)
    data = health.report(c, compose, settings, backups=Path(backups),
                         stuck_after=float(stuck_after) * 60)  # fmt: skip
    print(json.dumps(data, indent=2) if json_ else health.format_report(data))
    if data["problems"]:
        raise Exit(code=1)


@task(help={
    "retry": "queue the failed and stuck encodings again, through MediaCMS's own "
    "encode_media task (Default: off)",
    "stuck_after": STUCK_HELP,
    "json_": "print the encodings as JSON (Default: off)",
    "dry_run": "with --retry: list what it would queue again and change nothing (the list "
    "is read from the running site) (Default: off)",
})  # fmt: skip
def encodings(c, retry=False, stuck_after=encodes.STUCK_AFTER_MINUTES, json_=False,
              dry_run=False):  # fmt: skip
    """Failed and stuck encodings of the running site; --retry queues them again."""
    _, compose = _stack(c, swarm=True)
    answer = encodes.ask(c, compose, stuck_after=float(stuck_after) * 60, details=True,
                         retry=retry and not dry_run)  # fmt: skip
    if json_:
        print(json.dumps(answer, indent=2))
        return
    listed = answer["listed"]
    if listed:
        print(encodes.format_listed(listed))
    print(f"{answer['failed']} failed, {answer['stuck']} stuck (running, not updated for "
          f"{ops.format_age(float(stuck_after) * 60)})")  # fmt: skip
    if retry and dry_run:
        print(f"(dry run) would queue {len(listed)} encoding(s) again: "
              f"{' '.join(str(e['id']) for e in listed) or 'none'}")  # fmt: skip
    elif retry:
        left = sorted({e["id"] for e in listed} - set(answer["retried"]))
        print(f"queued again: {' '.join(map(str, answer['retried'])) or 'none'}"
              + (f"; changed while being read, left alone: {left}" if left else ""))  # fmt: skip
    elif listed:
        print("`invoke encodings --retry` queues them again")


@task(help={
    "service": "one service (Default: all)",
    "follow": "keep following (Default: off)",
    "tail": "lines to show from the end of each log, or `all` (Default: 200)",
})  # fmt: skip
def logs(c, service="", follow=False, tail="200"):
    """Show service logs."""
    _, compose = _stack(c)
    compose.run(c, "logs", "--tail", tail, *(["--follow"] if follow else []),
                *([service] if service else []))  # fmt: skip


@task(exclusive=True, positional=["counts"], help={"counts": "SERVICE=N[,SERVICE=N...]"})
def scale(c, counts=None, dry_run=False):
    """Scale services, e.g. `invoke scale celery_short=3,celery_long=2` (beat: 0 or 1)."""
    wanted = model.parse_scale([p for p in (counts or "").split(",") if p])
    _, compose = _stack(c)
    compose.scale(c, wanted)


@task(help={"command": 'manage.py arguments, quoted, e.g. "showmigrations users"'})
def manage(c, command, dry_run=False):
    """Run any manage.py command in the web container."""
    _, compose = _stack(c, swarm=True)
    compose.manage(c, *ops.split_command(command), tty=sys.stdin.isatty())


@task(help={
    "django": "the Django shell instead of bash (Default: off)",
    "c": "run one command and exit (Default: none, an interactive shell)",
})  # fmt: skip
def admin_shell(c, django=False, c_=None, dry_run=False):
    """A shell in the web container (bash, or --django), or one command with -c."""
    _, compose = _stack(c, swarm=True)
    if django:
        argv = ["python", "manage.py", "shell", *(["-c", c_] if c_ else [])]
    else:
        argv = ["bash", *(["-c", c_] if c_ else [])]
    compose.exec(c, "web", *argv, tty=c_ is None and sys.stdin.isatty())


@task(help={
    "user": "username (Default: ADMIN_USER, else admin)",
    "password": "new password; visible in ps, prefer --password-stdin "
    "(Default: a random one, printed)",
    "password_stdin": "read the new password from stdin (first line) (Default: off)",
})  # fmt: skip
def set_admin_password(c, user=None, password=None, password_stdin=False, dry_run=False):
    """Set an admin's password (random and printed when not given), handed over on stdin."""
    settings, compose = _stack(c, swarm=True)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise Exit("error: --password-stdin: no password on stdin; nothing was changed")
    new = ops.set_admin_password(c, compose, user or settings.get("ADMIN_USER", "admin"), password)
    if not password:
        print(f"new password: {new}")


@task(help={"dry_run": DEV_DRY_RUN})
def build_frontend(c, dry_run=False):
    """npm run dist in the dev compose (honours frontend/.env); copy into static; restart web."""
    settings, compose = _stack(c, dev=True)
    devstack.build_frontend(c, settings, compose)


@task(help={
    "args": 'extra pytest arguments, quoted, e.g. "-k upload -x" (Default: none)',
    "dry_run": DEV_DRY_RUN,
})  # fmt: skip
def test(c, args="", dry_run=False):
    """Run MediaCMS's pytest suite inside the dev image with TESTING=True."""
    settings, compose = _stack(c, dev=True)
    devstack.test(c, settings, compose, args, tty=sys.stdin.isatty())


# --- backups ---------------------------------------------------------------------------
@task(
    exclusive=True,
    help={"keep": "keep only the newest N database backups of this project (Default: 0, all)"},
)
def backup_db(c, keep=0, dest=str(BACKUPS), dry_run=False):
    """pg_dump (custom format) to backups/, with .sha256 and a manifest."""
    settings, compose = _stack(c, needs=("engine", "env"), swarm=True)
    backups.backup_db(c, compose, settings, Path(dest), keep=keep or None)


@task(exclusive=True, help={
    "file": "a .dump made by backup-db",
    "yes": "replace a non-empty database (a safety backup is taken first) (Default: off)",
})  # fmt: skip
def restore_db(c, file, yes=False, dry_run=False):
    """Verify and restore a database backup (safety backup first, one transaction)."""
    settings, compose = _stack(c, needs=("engine", "env"), swarm=True)
    restores.restore_db(c, compose, settings, Path(file), yes=yes, safety_dir=BACKUPS)


@task(
    exclusive=True,
    help={"keep": "keep only the newest N media archives of this project (Default: 0, all)"},
)
def backup_media(c, keep=0, dest=str(BACKUPS), dry_run=False):
    """Stream the media volume into a .tar.gz (uid 33 and dotfiles kept) with .sha256."""
    _, compose = _stack(c, needs=("engine", "env"), swarm=True)
    backups.backup_media(c, compose, Path(dest), keep=keep or None)


@task(exclusive=True, help={
    "file": "a .tar.gz made by backup-media",
    "yes": "replace a non-empty media volume (Default: off)",
})  # fmt: skip
def restore_media(c, file, yes=False, dry_run=False):
    """Verify a media archive, then replace the media volume's content with it."""
    _, compose = _stack(c, needs=("engine", "env"), swarm=True)
    restores.restore_media(c, compose, Path(file), yes=yes)


@task(exclusive=True, help={
    "keep": "keep only the newest N full backups of this project (Default: 0, all)",
    "offsite": "also send the folder to the restic repository of OFFSITE_REPOSITORY, "
    "checked (made on first use) before anything is written, then apply the OFFSITE_KEEP_* "
    "retention (Default: off)",
})  # fmt: skip
def backup(c, dest=str(BACKUPS), keep=0, offsite=False, dry_run=False):
    """Full backup: database, media, custom/, .env and a manifest in one folder."""
    settings, compose = _stack(c, needs=("engine", "env"), swarm=True)
    if offsite:
        offsites.backup(c, compose, settings, Path(dest), keep=keep or None)
    else:
        backups.backup_all(c, compose, settings, Path(dest), keep=keep or None)


@task(name="backups", help={
    "offsite": "list the snapshots in the off-site repository instead (Default: off)",
})  # fmt: skip
def list_backups(c, dest=str(BACKUPS), offsite=False, dry_run=False):
    """List this project's full backups: the local folders, or the off-site snapshots."""
    settings = _settings()
    if offsite:
        restic = offsites.Restic(c, offsites.configured(settings, Path(dest)))
        restic.open()
        print(offsites.table(restic.snapshots()))
    else:
        print(offsites.local_table(Path(dest), settings.project))


@task(help={
    "folder": "a full backup folder made by `invoke backup` (Default: this project's newest "
    "in --backups)",
    "snapshot": "verify an off-site snapshot instead (its id, or latest): fetched from "
    "OFFSITE_REPOSITORY into --backups, as `restore --from-offsite` does, and kept there "
    "with its verified.json (Default: none)",
    "backups": "the folder the newest backup is looked for in (Default: backups/ in the "
    "deployment folder)",
    "project": "compose project name of the throwaway stack; an existing stack of that name "
    "is refused (Default: <COMPOSE_PROJECT_NAME>-verify)",
})  # fmt: skip
def backup_verify(c, folder=None, snapshot=None, backups=str(BACKUPS), project=None):
    """Restore a backup into a throwaway stack, check rows, media, site and admin login,
    remove it; the result goes to the folder's verified.json (`invoke status` shows it)."""
    from mediacms_stack.procedures import verify

    settings, _ = _stack(c, needs=("engine", "env"))
    if snapshot:
        if folder:
            raise StackError("give a folder or an off-site snapshot, not both; nothing was changed")
        restic = offsites.Restic(c, offsites.configured(settings, Path(backups)))
        folder = str(restic.fetch(snapshot, Path(backups)))
    chosen = verify.pick_folder(folder, Path(backups), settings.project)
    verify.verify(c, settings, chosen, project=project)


@task(help={
    "at": "time of day, HH:MM local time (Default: 03:15)",
    "keep": "full backups to keep (Default: 7)",
    "verify": "run `invoke backup-verify` on each new backup, right after it (Default: off)",
    "offsite": "run `invoke backup --offsite`: each backup also goes to the off-site "
    "repository (Default: off)",
    "remove": "remove the schedule instead (Default: off)",
})  # fmt: skip
def backup_schedule(c, at="03:15", keep=7, dest=str(BACKUPS), verify=False, offsite=False,
                    remove=False, dry_run=False):  # fmt: skip
    """Daily `invoke backup --keep N` (--offsite: also off-site; --verify: then
    backup-verify): a systemd timer where systemd runs, else cron."""
    from mediacms_stack.data import schedule

    plan = schedule.make(_settings(), at=at, keep=int(keep), dest=Path(dest), verify=verify,
                         offsite=offsite)  # fmt: skip
    if remove:
        schedule.remove(c, plan)
        shell.say(f"{plan.name} removed")
        return
    how = schedule.install(c, plan)
    shell.say(f"{'would run' if dry_run else 'runs'} daily at {at}, keeping {keep} backups in "
              f"{plan.dest}{', each verified' if verify else ''}: {how}. Copy them off this "
              "host too (README, Scheduled backups)")  # fmt: skip


@task(exclusive=True, help={
    "folder": "a full backup folder made by `invoke backup` (backups/mediacms-<time>); with "
    "--from-offsite a snapshot of the off-site repository (its id, or latest)",
    "from_offsite": "fetch the snapshot FOLDER names from the off-site repository into "
    "backups/ first, then restore that folder (Default: off)",
    "yes": "replace a database that holds rows (a safety backup is taken first) "
    "(Default: off)",
})  # fmt: skip
def restore(c, folder, from_offsite=False, yes=False, dry_run=False):
    """Restore a full backup folder made by `invoke backup`, or an off-site snapshot of one."""
    settings, compose = _stack(c, needs=("engine", "env"), swarm=True)
    if from_offsite:
        restic = offsites.Restic(c, offsites.configured(settings, BACKUPS))
        folder = restic.fetch(folder, BACKUPS)
        if dry_run:
            print(f"(dry run) then: invoke restore {folder}" + (" --yes" if yes else ""))
            return
    restores.restore_all(c, compose, settings, Path(folder), yes=yes, safety_dir=BACKUPS)


@task(exclusive=True, help={
    "from_": "the 7.x deployment: its MediaCMS folder, with docker-compose.yaml and media_files/",
    "dump": "restore this pg_dump file (custom or plain SQL) instead of dumping the old database "
    "(Default: none)",
    "yes": "replace data already in the new stack (safety backup first) (Default: off)",
    "new_secret_key": "generate a new SECRET_KEY instead of carrying the old one (Default: off)",
    "dry_run": "print the plan (sizes, counts, target volumes) and change nothing; the new "
    "stack's volumes are looked into when an engine answers (Default: off)",
})  # fmt: skip
def migrate_from_7x(c, from_, dump=None, yes=False, new_secret_key=False, dry_run=False):
    """Move a monolithic 7.x deployment (database, media, settings, key) into this stack."""
    from mediacms_stack.procedures import migrate7x

    env_file = _settings().env_file
    if not env_file.exists() and not dry_run:
        config.init(config.home(), env_file=env_file, example=config.ROOT / config.EXAMPLE_FILE)
        print(f"wrote {env_file} (mode 600)")
    if not dry_run:
        engines.ensure(c)
    settings, compose = _stack(c, needs=("env", "custom") if not dry_run else ())
    if not dry_run:
        ops.ensure_images(c, settings)
    migrate7x.migrate(c, compose, settings, Path(from_),
                      dump=Path(dump) if dump else None, yes=yes,
                      new_secret_key=new_secret_key)  # fmt: skip


@task(exclusive=True, help={
    "to": "version to upgrade to; becomes MEDIACMS_VERSION (Default: the current one, again)",
    "build": "build the images from --source instead of pulling (Default: off)",
    "source": "MediaCMS tree for --build: PATH or GIT_URL@REF (Default: MEDIACMS_SOURCE)",
    "rollback": "undo an upgrade: the backup folder it printed (version, images and data) "
    "(Default: none)",
    "timeout": "seconds to wait for every service to be healthy (Default: 300)",
    "keep_failed": "leave a new version that does not come up healthy as it is, to look "
    "into it, instead of rolling back to the old one at once (Default: off)",
    "dry_run": "print the steps and, when the new images are on this engine, the migrations "
    "they would apply (asked read-only) and the path they take; change nothing (Default: off)",
})  # fmt: skip
def upgrade(c, to=None, build=False, source=None, rollback=None, timeout=300, keep_failed=False,
            dry_run=False):  # fmt: skip
    """Back up, get new images, gate their migrations, go in (no downtime or behind a 503 page)."""
    from mediacms_stack.procedures import rollback as rollbacks
    from mediacms_stack.procedures import upgrade as upgrades

    settings, compose = _stack(c, needs=("engine", "compose"))
    settings = upgrades.add_missing_keys(settings, dry_run=dry_run)  # e.g. REDIS_PASSWORD
    checks.require(c, settings, "env")
    if rollback:
        rollbacks.rollback(c, compose, settings, Path(rollback), backups=BACKUPS,
                          timeout=int(timeout))  # fmt: skip
    else:
        upgrades.upgrade(c, compose, settings, backups=BACKUPS, to=to, build=build,
                         source=source, timeout=int(timeout), keep_failed=keep_failed)  # fmt: skip


@task(exclusive=True, help={
    "image": "PostgreSQL image of the new major; recorded as POSTGRES_IMAGE "
    "(Default: POSTGRES_IMAGE)",
    "old_image": "image of the cluster's current major to read it with (Default: "
    "POSTGRES_IMAGE when --image differs from it, else --image's name with that major's tag)",
    "rollback": "return to the volume and image recorded by the last upgrade-postgres "
    "(Default: off)",
    "timeout": "seconds to wait for every service to be healthy (Default: 300)",
    "dry_run": "print the plan only; reads the volume's major through a throwaway "
    "container, changes nothing (Default: off)",
})  # fmt: skip
def upgrade_postgres(c, image=None, old_image=None, rollback=False, timeout=300, dry_run=False):
    """Move the database to the PostgreSQL image's newer major in a new volume, checked."""
    from mediacms_stack.procedures import pgupgrade

    settings, compose = _stack(c, needs=("engine", "compose", "env"))
    if rollback:
        pgupgrade.rollback_postgres(c, compose, settings, timeout=int(timeout))
    else:
        pgupgrade.upgrade_postgres(c, compose, settings, image=image, old_image=old_image,
                                   timeout=int(timeout))  # fmt: skip


# --- Docker Swarm (docker-stack.yaml) ---------------------------------------------------
@task(name="init", help={
    "advertise_addr": "address the other nodes reach this manager at (docker swarm init) "
    "(Default: Docker's choice)",
    "data_node": "node that keeps the db and redis volumes (Default: this one)",
    "dry_run": "print the commands only; change nothing, but ask the engine whether it is "
    "in a swarm already (Default: off)",
})  # fmt: skip
def swarm_init(c, advertise_addr=None, data_node=None, dry_run=False):
    """Make this engine a swarm manager and label the node that keeps db and redis."""
    from mediacms_stack.engines import swarm

    swarm.init(c, _settings(), advertise_addr=advertise_addr, data_node=data_node)


@task(name="deploy", exclusive=True, help={
    "timeout": "seconds to wait for every service to be healthy (Default: 600)",
})  # fmt: skip
def swarm_deploy(c, timeout=600, dry_run=False):
    """Check registry, shared media and data node, deploy docker-stack.yaml, wait healthy
    (a stack of one database role first gets MediaCMS's plain role, as upgrade does)."""
    from mediacms_stack.engines import swarm
    from mediacms_stack.procedures import swarmroles

    swarm.deploy(c, swarmroles.separate_roles(c, _settings()), timeout=float(timeout))


@task(name="scale", exclusive=True, positional=["counts"],
      help={"counts": "SERVICE=N[,SERVICE=N...]"})  # fmt: skip
def swarm_scale(c, counts=None, dry_run=False):
    """Scale services on the swarm, e.g. web=3,celery_long=2 (beat: 0 or 1)."""
    from mediacms_stack.engines import swarm

    wanted = model.parse_scale([p for p in (counts or "").split(",") if p], task="swarm.scale")
    swarm.scale(c, _settings(), wanted)


@task(name="status")
def swarm_status(c):
    """Services of the stack on the swarm: mode, replicas running/wanted, image."""
    from mediacms_stack.engines import swarm

    rows = swarm.status(c, _settings())
    print(ops.format_table(rows, ("SERVICE", "MODE", "REPLICAS", "IMAGE")))


@task(name="update", exclusive=True, help={
    "to": "version to run (its images must be in IMAGE_REGISTRY)",
    "timeout": "seconds to wait for the rolling update (Default: 900)",
})  # fmt: skip
def swarm_update(c, to, timeout=900, dry_run=False):
    """Rolling update to VERSION (start-first, health-gated, rolled back by Swarm on failure;
    a stack of one database role first gets MediaCMS's plain role, as upgrade does)."""
    from mediacms_stack.engines import swarm
    from mediacms_stack.procedures import swarmroles

    swarm.update(c, swarmroles.separate_roles(c, _settings(), to), to, timeout=float(timeout))


@task(name="rollback", exclusive=True)
def swarm_rollback(c, dry_run=False):
    """Every app service back to its previous specification."""
    from mediacms_stack.engines import swarm

    swarm.rollback(c, _settings())


ns = Collection(
    engine,
    init,
    doctor,
    build,
    relock,
    push,
    pull,
    up,
    dev_stack,
    down,
    restart,
    status,
    encodings,
    logs,
    scale,
    manage,
    admin_shell,
    set_admin_password,
    build_frontend,
    test,
    backup_db,
    restore_db,
    backup_media,
    restore_media,
    backup,
    list_backups,
    backup_verify,
    backup_schedule,
    restore,
    upgrade,
    upgrade_postgres,
    migrate_from_7x,
)
ns.add_collection(Collection("images", bootstrap_images), name="images")
ns.add_collection(Collection("swarm", swarm_init, swarm_deploy, swarm_scale, swarm_status,
                             swarm_update, swarm_rollback), name="swarm")  # fmt: skip
