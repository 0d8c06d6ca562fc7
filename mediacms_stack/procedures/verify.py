"""`invoke backup-verify`: a backup proves itself by being restored and used.

The backup folder is restored, by the steps of `invoke restore`
(:func:`restore.restore_into_empty`), into a throwaway stack on this host: a deployment folder of its own
(the live docker-compose.yaml and .env, with its own compose project name, a free port
on 127.0.0.1, the backup's custom/), so its own containers, networks and volumes; the
live stack is never touched. Then: the row counts of every table against the dump's
manifest, the sha256 of every media file against the media manifest (or the archive
itself, for backups made before it recorded them), the home page through the
throwaway's nginx, and an admin login. The throwaway stack goes with its volumes
whatever happens (failure, Ctrl-C, SIGTERM); the result is written to the folder's
``verified.json``, which `invoke status` shows.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, Request, build_opener

from invoke.context import Context
from invoke.exceptions import UnexpectedExit

from ..data import restore
from ..data.artifacts import (
    VERIFIED,
    BackupSet,
    check_backup_folder,
    latest,
    manifest_of,
    write_json,
)
from ..data.database import Database
from ..engines.compose import PRODUCTION, Compose
from ..engines.shell import say, wait_until
from ..stack import config, files, lock
from ..stack.config import Settings
from ..stack.errors import StackError
from . import ops

#: Compose's rule for project names.
_PROJECT = re.compile(r"[a-z0-9][a-z0-9_-]*")
_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
#: Superusers of the restored site (users.models.User, the tree contract), oldest first.
SUPERUSERS_SQL = "SELECT username FROM users_user WHERE is_superuser AND is_active ORDER BY id"


def throwaway_name(settings: Settings, project: str | None) -> str:
    name = project or f"{settings.project}-verify"
    if not _PROJECT.fullmatch(name):
        raise StackError(f"--project {name!r}: a compose project name is lower-case letters, "
                         "digits, - and _, starting with a letter or digit; nothing was changed")  # fmt: skip
    return name


def pick_folder(folder: str | None, backups: Path, project: str) -> Path:
    """``folder``, or the newest full backup of ``project`` in ``backups``."""
    if folder:
        path = Path(folder)
        if not path.is_dir():
            raise StackError(f"{path} is not a folder; give a full backup folder made by "
                             "`invoke backup` (backups/mediacms-<time>); nothing was changed")  # fmt: skip
        return path
    newest = latest(backups, "mediacms-2*", project)
    if newest is None:
        raise StackError(f"no full backup of {project} in {backups}: run `invoke backup` "
                         "first, or name a folder; nothing was changed")  # fmt: skip
    return newest[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _deployment(settings: Settings, name: str, port: int, folder: Path) -> Settings:
    """The throwaway deployment folder: the live compose file, the live .env with its own
    name, port and host, and an empty custom/ (the backup's replaces it)."""
    shutil.copy(settings.root / PRODUCTION, folder / PRODUCTION)
    (folder / "custom" / "static").mkdir(parents=True)
    (folder / "custom").chmod(0o755)
    (folder / "custom" / "static").chmod(0o755)
    own = {"COMPOSE_PROJECT_NAME": name, "HTTP_BIND": "127.0.0.1", "HTTP_PORT": str(port),
           "FRONTEND_HOST": f"http://127.0.0.1:{port}", "ALLOWED_HOSTS": "",
           "HTTPS_OVERLAY": "", "METRICS_OVERLAY": "", "WEB_REPLICAS": "1"}  # fmt: skip
    empty = Settings(folder, {}, folder / config.ENV_FILE)
    return config.update(empty, {**settings.values, **own})


def compare_media(recorded: dict[str, str], restored: dict[str, str]) -> list[str]:
    """What differs between the recorded checksums and the restored files, one line a
    kind (the first few names each)."""

    def said(what: str, names: list[str]) -> list[str]:
        shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
        return [f"{len(names)} file(s) {what}: {shown}"] if names else []

    return [
        *said("missing", [n for n in recorded if n not in restored]),
        *said(
            "with another checksum",
            [n for n in recorded if n in restored and restored[n] != recorded[n]],
        ),
        *said("not in the backup", [n for n in restored if n not in recorded]),
    ]


def _http(base: str) -> Callable[..., tuple[int, str, str]]:
    """A client of the throwaway site that keeps cookies: (status, final path, body)."""
    opener = build_opener(HTTPCookieProcessor(CookieJar()))

    def fetch(path: str, data: dict | None = None) -> tuple[int, str, str]:
        body = urlencode(data).encode() if data is not None else None
        request = Request(base + path, data=body, headers={"Referer": base + path})  # noqa: S310 (http://127.0.0.1:PORT only)
        with opener.open(request, timeout=30) as answer:
            return answer.status, answer.geturl().removeprefix(base), answer.read().decode()

    return fetch


def _site(base: str) -> str:
    """The home page through nginx answers 200 (a starting web: bounded wait)."""
    seen: list[str] = []

    def answered() -> bool:
        try:
            status, _, _ = _http(base)("/")
        except URLError as error:
            seen[:] = [str(getattr(error, "code", "") or error.reason)]
            return False
        seen[:] = [str(status)]
        return status == 200

    try:
        wait_until(answered, timeout=90, interval=2, what="the home page answered 200")
    except StackError as error:
        raise StackError(f"{error} (last answer: {seen[0] if seen else 'none'})") from None
    return "home page 200 through nginx"


def _admin_login(c: Context, compose: Compose, settings: Settings, base: str) -> str:
    """A superuser of the restored site gets a throwaway password and logs in to the
    admin through nginx with it, as a browser does (CSRF token, cookies)."""
    found = [row[0] for row in Database.of(compose, settings).query(c, SUPERUSERS_SQL)]
    if not found:
        raise StackError("the restored database has no active superuser")
    wanted = settings.get("ADMIN_USER", "admin")
    user = wanted if wanted in found else found[0]
    try:
        password = ops.set_admin_password(c, compose, user, None)
    except UnexpectedExit as error:
        raise StackError(
            f"setting a password for {user} failed: {error.result.stderr[-300:]}"
        ) from None
    fetch = _http(base)
    try:
        _, _, page = fetch("/admin/login/")
        token = _CSRF.search(page)
        if token is None:
            raise StackError("the admin login page has no CSRF token")
        status, path, body = fetch("/admin/login/?next=/admin/", {
            "csrfmiddlewaretoken": token[1], "username": user, "password": password})  # fmt: skip
    except URLError as error:
        raise StackError(f"the admin login failed: {error}") from None
    if (status, path) != (200, "/admin/") or "/admin/logout/" not in body:
        raise StackError(f"{user} could not log in to the admin (ended at {path}, {status})")
    return f"{user} logged in to /admin/"


@contextmanager
def _interruptible(stopped: list[str]) -> Iterator[None]:
    """SIGTERM (a stopped timer) ends the work like Ctrl-C does; either is noted in
    ``stopped``, so that the clean-up knows the result is not a verdict."""

    def interrupt(signum: int, _frame: object) -> None:
        stopped.append(signal.Signals(signum).name)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _uninterrupted() -> Iterator[None]:
    """The clean-up runs to its end: Ctrl-C and SIGTERM are ignored meanwhile (by the
    commands it starts too)."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _unhealthy(c: Context, compose: Compose) -> str:
    rows = [f"{r[0]} {r[1]}, {r[2]}" for r in ops.status_rows(c, compose)
            if r[1:3] != ("running", "healthy")]  # fmt: skip
    return "; ".join(rows) or "see compose's message above"


def _check(checks: dict, name: str, step: Callable[[], str]) -> None:
    try:
        checks[name] = {"ok": True, "detail": step()}
    except StackError as error:
        checks[name] = {"ok": False, "detail": str(error)}


def _restore_and_check(c: Context, compose: Compose, own: Settings, parts: BackupSet,
                       checks: dict, figures: dict) -> None:  # fmt: skip
    if not compose.up(c, "db", "redis", "redis_cache", warn=True).ok:
        raise StackError(
            f"the throwaway stack's db and redis did not start: {_unhealthy(c, compose)}"
        )
    try:
        counts = restore.restore_into_empty(c, compose, own, parts)
    except StackError as error:
        checks["restore"] = {"ok": False, "detail": str(error)}
        return
    recorded = manifest_of(parts.dump).get("row_counts")
    figures.update(tables=len(counts), rows=sum(counts.values()))
    checks["database"] = {"ok": True, "detail": (
        f"{len(counts)} tables, {sum(counts.values())} rows, as the backup recorded"
        if recorded is not None else
        f"{len(counts)} tables, {sum(counts.values())} rows (the backup recorded no counts)")}  # fmt: skip

    def media() -> str:
        recorded = manifest_of(parts.media).get("files")
        source = "as the backup recorded"
        if not isinstance(recorded, dict):
            recorded, source = files.tar_checksums(parts.media), "as in the archive (this "
            source += "backup recorded no checksums)"
        restored = restore.media_checksums(c, compose)
        figures["media_files"] = len(restored)
        differences = compare_media(recorded, restored)
        if differences:
            raise StackError("media differ from the backup: " + "; ".join(differences))
        return f"{len(restored)} files, sha256 {source}"

    _check(checks, "media", media)
    if not compose.up(c, "nginx", warn=True).ok:  # web and migrations first; no worker, no beat
        checks["site"] = {
            "ok": False,
            "detail": f"the site did not start: {_unhealthy(c, compose)}",
        }
        return
    base = f"http://127.0.0.1:{own.get('HTTP_PORT')}"
    _check(checks, "site", lambda: _site(base))
    _check(checks, "admin", lambda: _admin_login(c, compose, own, base))


def verify(c: Context, settings: Settings, folder: Path, *, project: str | None = None) -> dict:
    """Restore ``folder`` into a throwaway stack, check it, remove it; record and return
    the result (StackError when the backup failed a check)."""
    name = throwaway_name(settings, project)
    parts = check_backup_folder(folder)  # a bad folder is refused before anything exists
    with lock.exclusive(replace(settings, values={**settings.values,
                                                  "COMPOSE_PROJECT_NAME": name}), "backup-verify"):  # fmt: skip
        probe = Compose(settings.root, project=name)
        held = {kind: n for kind, n in probe.existing(c).items() if n}
        if held:
            listed = ", ".join(f"{n} {kind}(s)" for kind, n in held.items())
            raise StackError(
                f"the engine already has a stack named {name} ({listed}); backup-verify needs "
                f"the name for its throwaway stack: pass --project OTHER, or, if it is what a "
                f"killed backup-verify left, `docker compose -p {name} down -v`; nothing was "
                "changed"
            )
        return _run(c, settings, parts, name)


def _run(c: Context, settings: Settings, parts: BackupSet, name: str) -> dict:
    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    own = _deployment(settings, name, free_port(), home)
    compose = Compose.for_settings(own)
    checks: dict[str, dict] = {}
    figures: dict[str, int] = {}
    stopped: list[str] = []
    say(f"restoring {parts.folder} into the throwaway stack {name} "
        f"(127.0.0.1:{own.get('HTTP_PORT')}); {settings.project} is not touched")  # fmt: skip
    try:
        with _interruptible(stopped):
            _restore_and_check(c, compose, own, parts, checks, figures)
    except KeyboardInterrupt:
        stopped.append("SIGINT")
    except Exception:
        if not stopped:  # a command that the interrupt ended fails too: that is no error
            raise
    finally:
        with _uninterrupted():
            compose.run(c, "down", "--volumes", "--remove-orphans", "--timeout", "10",
                        warn=True, hide=True)  # fmt: skip
            shutil.rmtree(home, ignore_errors=True)
            left = {kind: n for kind, n in compose.existing(c).items() if n}
    removed = (f"NOT removed, {left}: `docker compose -p {name} down -v`" if left
               else "removed with its volumes")  # fmt: skip
    if stopped:
        raise StackError(f"backup-verify stopped by {stopped[0]}; the throwaway stack {name} "
                         f"was {removed}; nothing was recorded")  # fmt: skip
    passed = bool(checks) and all(check["ok"] for check in checks.values()) and not left
    result = {
        "verified_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "outcome": "passed" if passed else "failed",
        "seconds": round(time.monotonic() - started, 1),
        "stack": name,
        "mediacms_version": settings.version,
        "checks": checks,
        **figures,
    }
    write_json(parts.folder / VERIFIED, result)
    say(format_result(parts.folder, result, removed))
    if not passed:
        failed = [f"{kind}: {c['detail']}" for kind, c in checks.items() if not c["ok"]]
        raise StackError(f"backup {parts.folder} FAILED its verification: "
                         + ("; ".join(failed) or f"the throwaway stack was {removed}"))  # fmt: skip
    return result


def format_result(folder: Path, result: dict, removed: str) -> str:
    lines = [f"{folder}: {result['outcome'].upper()} in {result['seconds']:.0f} s "
             f"(throwaway stack {result['stack']} {removed})"]  # fmt: skip
    for kind, check in result["checks"].items():
        lines.append(f"  {kind:<9}{'ok' if check['ok'] else 'FAILED'}: {check['detail']}")
    lines.append(f"recorded in {folder / VERIFIED}")
    return "\n".join(lines)
