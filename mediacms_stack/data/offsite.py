"""Off-site copies of full backups in a restic repository: encrypted before they leave
the host, deduplicated, pruned by a retention policy, and restored from.

restic (Debian's package) runs in a throwaway container of ``bootstrap/restic`` built on
the deployment's BASE_IMAGE: as the operator's uid, read-only, without capabilities,
with the backup folder mounted read-only and the password as a read-only file. Its
network is none for a local repository and the host's for SFTP and S3 (a client of the
host's own routes, listening on nothing). Each snapshot holds one folder made by
``invoke backup`` at ``/backups/<folder name>``, tagged with the project, so that
projects can share a repository and retention (``forget --prune``, grouped by tags)
counts each project's own snapshots only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from invoke.context import Context

from ..engines import shell
from ..engines.compose import Compose
from ..images import bootstrap
from ..stack import files
from ..stack.config import ROOT, Settings
from ..stack.errors import StackError
from .artifacts import manifest_of, offsite_record, write_json, written_by
from .backup import backup_all

#: restic's exit codes (0.17+): no repository at the location; the password opens no key.
NO_REPOSITORY, WRONG_PASSWORD = 10, 12
#: Where the container sees what it is given.
SECRETS = "/run/offsite"
SNAPSHOT_ROOT = "/backups"
#: A snapshot as an operator names it: an id (or its first 8+ hex digits), or latest.
_SNAPSHOT = re.compile(r"latest|[0-9a-f]{8,64}")
_FOLDER = re.compile(r"mediacms-[0-9A-Za-z-]+")
#: Credentials in a repository's address (``sftp://USER:PASSWORD@HOST...``,
#: ``s3:https://KEY_ID:SECRET@HOST...``): the pair, up to the last ``@`` before the path.
_CREDENTIALS = re.compile(r"^(sftp:(?://)?|s3:(?:\w+://)?)[^:@/]*:[^/]*@")
KEEP_KEYS = ("OFFSITE_KEEP_DAILY", "OFFSITE_KEEP_WEEKLY", "OFFSITE_KEEP_MONTHLY")
#: restic's cache (encrypted copies of the repository's index), where restic on the host
#: would keep it.
CACHE_DIR = Path.home() / ".cache" / "restic"


def _file(settings: Settings, key: str, *, private: bool) -> Path:
    """The file a .env key names: absolute, a regular file, not empty; ``private``: read
    by its owner only."""
    path = Path(settings.require(key))
    if not path.is_absolute():
        raise StackError(f"{key}={path}: give an absolute path; nothing was changed")
    if not path.is_file() or path.stat().st_size == 0:
        raise StackError(f"{key}={path} is not a file with something in it; nothing was changed")
    if private and path.stat().st_mode & 0o077:
        raise StackError(f"{key}={path} is readable by others (mode "
                         f"{path.stat().st_mode & 0o777:o}): chmod 600 it; nothing was changed")  # fmt: skip
    if ":" in str(path) or "," in str(path):
        raise StackError(f"{key}={path}: a path with ':' or ',' cannot be mounted; nothing was "
                         "changed")  # fmt: skip
    return path


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


@dataclass(frozen=True)
class Offsite:
    """The repository of a deployment (.env's OFFSITE_* keys), checked."""

    settings: Settings
    repository: str
    password_file: Path
    mounts: tuple[tuple[Path, str], ...]  # host path, container path (read-only)
    options: tuple[str, ...]  # restic options: -o sftp.args=...
    environment: tuple[str, ...]  # KEY=VALUE for the container
    keep: tuple[tuple[str, int], ...]  # ("daily", 7), ...

    @property
    def local(self) -> Path | None:
        return None if self.repository.startswith(("sftp:", "s3:")) else Path(self.repository)

    @property
    def tag(self) -> str:
        return f"project={self.settings.project}"

    @property
    def location(self) -> str:
        """The repository's address as it may be shown and stored: without credentials
        (a user and password, or a key pair, written into it are dropped; the keys this
        project uses are files, never part of it)."""
        return _CREDENTIALS.sub(r"\1", self.repository)

    def argv(self, *args: str, image: str, mounts: tuple[tuple[Path, str, str], ...] = ()
             ) -> list[str]:  # fmt: skip
        """``restic ARGS`` in its container; ``mounts``: extra (host, container, ro|rw)."""
        local = self.local
        binds = [(path, inside, "ro") for path, inside in self.mounts] + list(mounts)
        if local is not None:
            binds.append((local, "/repository", "rw"))
        binds.append((CACHE_DIR, "/cache", "rw"))
        return ["docker", "run", "--rm", "--user", f"{os.getuid()}:{os.getgid()}",
                "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",  # noqa: S108 (its own /tmp)
                "--security-opt", "no-new-privileges:true",
                "--network", "none" if local is not None else "host",
                *(a for path, inside, mode in binds for a in ("-v", f"{path}:{inside}:{mode}")),
                "-e", f"RESTIC_REPOSITORY={'/repository' if local else self.repository}",
                "-e", f"RESTIC_PASSWORD_FILE={SECRETS}/password", "-e", "RESTIC_CACHE_DIR=/cache",
                *(a for pair in self.environment for a in ("-e", pair)),
                image, *self.options, *args]  # fmt: skip


def configured(settings: Settings, backups: Path) -> Offsite:
    """The repository .env configures, every file it needs checked; StackError (nothing
    changed) when something is missing or unsafe."""
    repository = settings.get("OFFSITE_REPOSITORY")
    if not repository:
        raise StackError(f"no off-site repository: set OFFSITE_REPOSITORY and "
                         f"OFFSITE_PASSWORD_FILE in {settings.env_file} (README, Off-site "
                         "backups); nothing was changed")  # fmt: skip
    if os.environ.get("DOCKER_HOST", "unix://").split("://")[0] not in ("unix", ""):
        raise StackError("off-site copies run restic in a container on this host's engine (it "
                         "mounts the backup folder): unset DOCKER_HOST; nothing was changed")  # fmt: skip
    password = _file(settings, "OFFSITE_PASSWORD_FILE", private=True)
    for folder, what in ((settings.root, "the deployment folder"), (backups, "the backups")):
        if _inside(password, folder):
            raise StackError(f"OFFSITE_PASSWORD_FILE={password} is inside {what} ({folder}): "
                             "keep the key apart from the data it protects (README, Off-site "
                             "backups); nothing was changed")  # fmt: skip
    mounts: list[tuple[Path, str]] = [(password, f"{SECRETS}/password")]
    options: list[str] = []
    environment: list[str] = []
    if repository.startswith("sftp:"):
        key = _file(settings, "OFFSITE_SSH_KEY", private=True)
        known = _file(settings, "OFFSITE_SSH_KNOWN_HOSTS", private=False)
        mounts += [(key, f"{SECRETS}/ssh_key"), (known, f"{SECRETS}/known_hosts")]
        options = ["-o", f"sftp.args=-F /dev/null -i {SECRETS}/ssh_key -o BatchMode=yes "
                   f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={SECRETS}/known_hosts"]  # fmt: skip
    elif repository.startswith("s3:"):
        credentials = _file(settings, "OFFSITE_S3_CREDENTIALS_FILE", private=True)
        mounts.append((credentials, f"{SECRETS}/aws_credentials"))
        environment = [f"AWS_SHARED_CREDENTIALS_FILE={SECRETS}/aws_credentials"]
    elif not repository.startswith("/") or ":" in repository or "," in repository:
        raise StackError(f"OFFSITE_REPOSITORY={repository}: expected an absolute path, "
                         "sftp:USER@HOST:/PATH (or sftp://USER@HOST:PORT//PATH) or "
                         "s3:https://HOST/BUCKET/PATH; nothing was changed")  # fmt: skip
    elif _inside(Path(repository), backups) or _inside(password, Path(repository)):
        raise StackError(f"OFFSITE_REPOSITORY={repository}: the repository may not be inside "
                         "the backups folder, nor hold its own password file; nothing was "
                         "changed")  # fmt: skip
    keep = []
    for key in KEEP_KEYS:
        value = settings.get(key, "0")
        if not value.isdigit():
            raise StackError(f"{key}={value}: expected a whole number; nothing was changed")
        keep.append((key.removeprefix("OFFSITE_KEEP_").lower(), int(value)))
    if not any(count for _, count in keep):
        raise StackError(f"set at least one of {', '.join(KEEP_KEYS)} above 0 (how many "
                         "snapshots the retention keeps); nothing was changed")  # fmt: skip
    return Offsite(settings, repository, password, tuple(mounts), tuple(options),
                   tuple(environment), tuple(keep))  # fmt: skip


class Restic:
    """restic commands on one repository, printed like every command (``--dry-run``)."""

    def __init__(self, c: Context, offsite: Offsite) -> None:
        self.c, self.offsite = c, offsite
        base = offsite.settings.get("BASE_IMAGE", "debian:trixie-slim")
        self.image = bootstrap.tool_image(c, ROOT, "restic", base=base)

    def run(self, *args: str, mounts: tuple = (), hide: bool | str = "out"):
        argv = self.offsite.argv(*args, image=self.image, mounts=mounts)
        return shell.run(self.c, argv, hide=hide, warn=True, in_stream=False)

    def open(self, *, create: bool = False) -> None:
        """Check that the repository answers and the password opens it; ``create``: make
        it when there is none (the first off-site backup). Else StackError, nothing changed."""
        where = self.offsite.repository
        local = self.offsite.local
        if not shell.dry(self.c) and local is not None and not local.is_dir():
            if not (create and local.parent.is_dir()):
                raise StackError(f"no off-site repository at {where} (the folder does not "
                                 "exist; `invoke backup --offsite` makes it in an existing "
                                 "folder); nothing was changed")  # fmt: skip
            files.private_dir(local)
        if not shell.dry(self.c):
            files.private_dir(CACHE_DIR)
        result = self.run("cat", "config", hide=True)
        if result is None or result.ok:
            return
        if result.exited == NO_REPOSITORY and create:
            made = self.run("init")
            if made is not None and made.ok:
                shell.say(f"made the repository {where} (encrypted with the key in "
                          f"{self.offsite.password_file}: without it the backups are lost)")  # fmt: skip
                return
            result = made
        raise StackError(self._why(result) + "; nothing was changed")

    def _why(self, result) -> str:
        where = self.offsite.repository
        if result.exited == WRONG_PASSWORD:
            return (f"the key in OFFSITE_PASSWORD_FILE ({self.offsite.password_file}) does not "
                    f"open the repository {where}: wrong password")  # fmt: skip
        if result.exited == NO_REPOSITORY:
            return (f"no off-site repository at {where} (the first `invoke backup --offsite` "
                    "makes it)")  # fmt: skip
        said = [line for line in result.stderr.splitlines() if line.strip()]
        return f"the off-site repository {where} did not answer: {' / '.join(said[-2:])}"

    def send(self, folder: Path) -> dict:
        """One snapshot of ``folder``; returns restic's summary (sizes, seconds)."""
        inside = f"{SNAPSHOT_ROOT}/{folder.name}"
        started = time.monotonic()
        result = self.run("backup", "--json", "--host", socket.gethostname(), "--tag",
                          self.offsite.tag, inside, mounts=((folder, inside, "ro"),))  # fmt: skip
        if result is None:
            return {}
        if not result.ok:
            raise StackError(f"{self._why(result)}; the local backup {folder} is kept, it "
                             "has no off-site copy")  # fmt: skip
        summary = {}
        for line in result.stdout.splitlines():
            message = json.loads(line) if line.startswith("{") else {}
            if message.get("message_type") == "summary":
                summary = message
        summary["seconds"] = round(time.monotonic() - started, 2)
        shell.say(f"snapshot {summary.get('snapshot_id', '?')[:8]} of {folder.name}: "
                  f"{summary.get('total_bytes_processed', 0)} bytes read, "
                  f"{summary.get('data_added_packed', 0)} bytes added (deduplicated, compressed) "
                  f"in {summary['seconds']} s")  # fmt: skip
        return summary

    def forget(self) -> None:
        """Retention: this project's snapshots beyond the policy removed, their data pruned."""
        policy = [a for name, count in self.offsite.keep if count
                  for a in (f"--keep-{name}", str(count))]  # fmt: skip
        result = self.run("forget", "--prune", "--tag", self.offsite.tag, "--group-by", "tags",
                          *policy)  # fmt: skip
        if result is not None and not result.ok:
            raise StackError(f"retention failed ({self._why(result)}); the new snapshot is kept")
        kept = ", ".join(f"{count} {name}" for name, count in self.offsite.keep if count)
        shell.say(f"retention: {kept} snapshots of {self.offsite.settings.project} kept")

    def snapshots(self, which: str | None = None) -> list[dict]:
        """This project's snapshots, oldest first (``which``: one id, or latest)."""
        result = self.run("snapshots", "--json", "--tag", self.offsite.tag,
                          *([which] if which else []))  # fmt: skip
        if result is None:
            return []
        if not result.ok:
            raise StackError(self._why(result) + "; nothing was changed")
        return json.loads(result.stdout or "[]")

    def fetch(self, snapshot: str, dest: Path) -> Path:
        """Restore ``snapshot``'s backup folder into ``dest``, beside the local ones, under
        its own name (with the snapshot's id added when that name is taken)."""
        if not _SNAPSHOT.fullmatch(snapshot):
            raise StackError(f"{snapshot!r} is not a snapshot: give its id (8 hex digits or "
                             "more, see `invoke backups --offsite`) or latest; nothing was "
                             "changed")  # fmt: skip
        self.open()
        if shell.dry(self.c):
            self.run("restore", snapshot, "--target", "/restore",
                     mounts=((dest / f".offsite-{snapshot}.partial", "/restore", "rw"),))  # fmt: skip
            return dest / f"<the folder in snapshot {snapshot}>"
        found = self.snapshots(snapshot)
        if len(found) != 1:
            raise StackError(f"no snapshot {snapshot} of {self.offsite.settings.project} in "
                             f"{self.offsite.repository} (`invoke backups --offsite` lists "
                             "them); nothing was changed")  # fmt: skip
        snap = found[0]
        paths = [PurePosixPath(p) for p in snap.get("paths", [])]
        name = paths[0].name if len(paths) == 1 else ""
        if not _FOLDER.fullmatch(name) or paths[0].parent != PurePosixPath(SNAPSHOT_ROOT):
            raise StackError(f"snapshot {snap['short_id']} holds {', '.join(map(str, paths))}, "
                             "not one folder of `invoke backup --offsite`; nothing was changed")  # fmt: skip
        target = dest / name
        if target.exists():
            target = dest / f"{name}-{snap['short_id']}"
        if target.exists():
            raise StackError(f"{target} exists already: restore it with `invoke restore "
                             f"{target}`; nothing was changed")  # fmt: skip
        staging = files.private_dir(dest / f".offsite-{snap['short_id']}.{os.getpid()}.partial")
        try:
            result = self.run("restore", snap["id"], "--target", "/restore",
                              mounts=((staging, "/restore", "rw"),))  # fmt: skip
            if result is None or not result.ok:
                raise StackError(f"restoring snapshot {snap['short_id']} failed: "
                                 f"{self._why(result)}; nothing was changed")  # fmt: skip
            (staging / SNAPSHOT_ROOT.strip("/") / name).rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        shell.say(f"snapshot {snap['short_id']} ({snap['time'][:19]}) restored into {target}")
        return target


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError


def table(snapshots: list[dict]) -> str:
    """The snapshots as ``invoke backups --offsite`` shows them."""
    rows = [("SNAPSHOT", "TIME (UTC)", "FOLDER", "SIZE", "ADDED")]
    for snap in snapshots:
        summary = snap.get("summary", {})
        rows.append((snap["short_id"], snap["time"][:19].replace("T", " "),
                     PurePosixPath(snap["paths"][0]).name if snap.get("paths") else "?",
                     _size(summary.get("total_bytes_processed", 0)),
                     _size(summary.get("data_added_packed", 0))))  # fmt: skip
    if len(rows) == 1:
        return "no off-site snapshot of this project yet (invoke backup --offsite)"
    return "\n".join("  ".join(f"{cell:<21}" for cell in row).rstrip() for row in rows)


def local_table(dest: Path, project: str) -> str:
    """The full backup folders of ``project`` in ``dest``, as ``invoke backups`` shows them."""
    rows = [("FOLDER", "CREATED (UTC)", "VERSION", "SIZE")]
    for folder in written_by(dest, "mediacms-2*", project):
        manifest = manifest_of(folder)
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        rows.append((folder.name, str(manifest.get("created_utc", "?"))[:19].replace("T", " "),
                     str(manifest.get("mediacms_version", "?")), _size(size)))  # fmt: skip
    if len(rows) == 1:
        return f"no full backup of {project} in {dest} (invoke backup)"
    return "\n".join("  ".join(f"{cell:<24}" for cell in row).rstrip() for row in rows)


def record(dest: Path, offsite: Offsite, folder: Path, summary: dict) -> None:
    """The snapshot just sent, recorded beside the backups (replacing the last, mode 600)
    for `invoke status`, which does not ask restic: that needs the key and takes a while.
    Nothing when restic named no snapshot (a dry run)."""
    if not summary.get("snapshot_id"):
        return
    write_json(offsite_record(dest, offsite.settings.project), {
        "project": offsite.settings.project, "snapshot": summary["snapshot_id"],
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "repository": offsite.location, "folder": str(folder)})  # fmt: skip


def backup(c: Context, compose: Compose, settings: Settings, dest: Path, *,
           keep: int | None = None) -> tuple[Path, dict]:  # fmt: skip
    """``invoke backup --offsite``: the repository checked (made on first use) before
    anything is written, then the full backup, its snapshot (recorded once it is off-site,
    whatever the retention then does), the retention."""
    restic = Restic(c, configured(settings, dest))
    restic.open(create=True)
    folder = backup_all(c, compose, settings, dest, keep=keep)
    summary = restic.send(folder)
    record(dest, restic.offsite, folder, summary)
    restic.forget()
    return folder, summary
