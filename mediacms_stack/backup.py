"""Backups that are proven to restore: database, media, and whole-instance sets.

Rules every function here keeps:
* a backup is streamed into a temporary name and renamed only after the producing
  command exited 0, so a failure never leaves a file that looks like a backup;
* each backup file has a ``.sha256`` beside it and a manifest describing it;
* a restore checks the file (checksum, format) before touching anything, takes a
  safety backup first, and runs in one transaction where the engine allows it;
* backup folders are mode 700 and every file in them 600; archives are restored only
  when every entry is a plain file or folder inside the target (:func:`files.check_tar`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from invoke.context import Context

from . import config, files
from .compose import Compose
from .config import Settings
from .shell import StackError

PGDUMP_MAGIC = b"PGDMP"
APP_SERVICES = ("nginx", "web", "celery_beat", "celery_short", "celery_long")
MEDIA_DIR = "/home/mediacms.io/mediacms/media_files"
#: Name prefix of the staging folders a media restore makes at the top of the volume
#: (a dotfile: nginx never serves it, and backups leave it out).
STAGE_PREFIX = ".mediacms-restore-"

COUNT_ROWS_SQL = (
    "SELECT table_name, (xpath('/row/c/text()', query_to_xml(format("
    "'SELECT count(*) AS c FROM %I.%I', table_schema, table_name), false, true, '')))[1]"
    "::text::bigint FROM information_schema.tables WHERE table_schema = 'public' "
    "AND table_type = 'BASE TABLE' ORDER BY table_name"
)
MIGRATIONS_SQL = "SELECT app || '.' || name FROM django_migrations ORDER BY id"

#: Prefix of the manifest lines the dump script writes to stderr (the dump is stdout).
MANIFEST_LINE = "@manifest\t"

#: What ``backup-db`` runs inside the db container, in one ``docker compose exec``
#: (``sh -c SCRIPT pg-dump USER DB MANIFEST_SQL``): a psql session opens a read-only
#: repeatable-read transaction and exports its snapshot; pg_dump dumps that snapshot to
#: stdout while the same session counts rows and lists migrations in it, so the counts in
#: the manifest are exactly those of the dump even on a live site. The session's output
#: reaches stderr as ``@manifest``-prefixed lines once both succeeded.
DUMP_SCRIPT = r"""set -u
trap '' PIPE
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
mkfifo "$work/sql" "$work/out" || exit 1
psql -X -q -A -t -F "$(printf '\t')" -v ON_ERROR_STOP=1 -U "$1" -d "$2" <"$work/sql" >"$work/out" &
session=$!
exec 3>"$work/sql"
printf '%s\n' 'BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;' 'SELECT pg_export_snapshot();' >&3
IFS= read -r snapshot <"$work/out"
if [ -z "$snapshot" ]; then wait "$session"; echo "no snapshot of database $2" >&2; exit 1; fi
printf '\\o %s\n%s\n' "$work/manifest" "$3" >&3
pg_dump --snapshot="$snapshot" -U "$1" -d "$2" --format=custom --no-owner --no-privileges
dumped=$?
printf 'COMMIT;\n' >&3
exec 3>&-
wait "$session"
counted=$?
[ "$dumped" -eq 0 ] || exit "$dumped"
[ "$counted" -eq 0 ] || exit "$counted"
sed 's/^/@manifest\t/' "$work/manifest" >&2
"""

#: What ``restore-db`` runs inside the db container (``sh -c SCRIPT pg-restore USER DB``,
#: the archive on stdin): one transaction that replaces the public schema with the
#: archive's, so tables the archive does not know (say, from a later migration) go too.
#: COMMIT comes only from pg_restore's last line: when it cannot read the whole archive,
#: psql reaches the end of its input inside the transaction and nothing is committed.
RESTORE_SCRIPT = r"""set -u
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
{
  printf '%s\n' 'SET client_min_messages = error;' 'BEGIN;' \
    'DROP SCHEMA IF EXISTS public CASCADE;' 'CREATE SCHEMA public;'
  pg_restore --no-owner --no-privileges --single-transaction --file=-
  echo "$?" >"$work/read"
} | psql -X -q -v ON_ERROR_STOP=1 -U "$1" -d "$2" >/dev/null
applied=$?
[ "$applied" -eq 0 ] || exit "$applied"
read -r status <"$work/read"
if [ "$status" -ne 0 ]; then
  echo "pg_restore could not read the whole archive (exit $status); nothing was committed" >&2
  exit 1
fi
"""


#: Row counts and applied migrations as ``rows``/``migration`` lines (psql -At); only
#: module constants are joined here, no outside input.
MANIFEST_SQL = (
    f"SELECT 'rows', counted.* FROM ({COUNT_ROWS_SQL}) AS counted;\n"  # noqa: S608
    "SELECT to_regclass('public.django_migrations') IS NOT NULL AS has_migrations \\gset\n"
    "\\if :has_migrations\n"
    f"SELECT 'migration', applied.* FROM ({MIGRATIONS_SQL}) AS applied;\n"
    "\\endif"
)


def parse_manifest_lines(stderr: str) -> tuple[dict[str, int], list[str], list[str]]:
    """Split the dump script's stderr into (row counts, migrations, other messages)."""
    counts: dict[str, int] = {}
    migrations: list[str] = []
    other: list[str] = []
    for line in stderr.splitlines():
        if not line.startswith(MANIFEST_LINE):
            if line.strip():
                other.append(line)
            continue
        kind, _, rest = line[len(MANIFEST_LINE) :].partition("\t")
        if kind == "rows":
            table, _, count = rest.partition("\t")
            counts[table] = int(count)
        elif kind == "migration":
            migrations.append(rest)
    return counts, migrations, other


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksum(path: Path, digest: str | None = None) -> Path:
    """Write ``path.sha256`` (``digest`` when it was computed while the file was written)."""
    side = path.with_name(path.name + ".sha256")
    files.write_private(side, f"{digest or sha256_of(path)}  {path.name}\n")
    return side


def write_json(path: Path, data: dict) -> None:
    files.write_private(path, json.dumps(data, indent=2))


def backup_dir(dest: Path) -> Path:
    """``dest`` created mode 700; the deployment's own ``backups/`` made 700 if it was not."""
    ours = dest.resolve() == (config.home() / "backups").resolve()
    return files.private_dir(dest, tighten=ours)


class _FollowingHasher(threading.Thread):
    """sha256 of a file computed while another process appends to it (see
    :func:`hashed_while_written`)."""

    def __init__(self, path: Path) -> None:
        super().__init__(name=f"sha256 {path.name}", daemon=True)
        self.path = path
        self.writer_done = threading.Event()
        self.digest = ""
        self.size = 0

    def run(self) -> None:
        digest = hashlib.sha256()
        with self.path.open("rb") as handle:
            while True:
                last = self.writer_done.is_set()  # before reading: the last pass sees all
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
                    self.size += len(chunk)
                if last:
                    break
                time.sleep(0.05)
        self.digest = digest.hexdigest()


@contextmanager
def hashed_while_written(path: Path) -> Iterator[_FollowingHasher]:
    """Create ``path`` (mode 600) and hash it in a thread while a command writes it.

    The backup is read once, while it is written, by OpenSSL's sha256 in this process.
    Measured on 2 cores with 256 MB of media: ``| sha256sum`` in the pipe added 0.5 s
    to a 8.7 s backup, a second pass after it 0.2 s, this about nothing.
    Use :func:`checksum_of` on the result.
    """
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    hasher = _FollowingHasher(path)
    hasher.start()
    try:
        yield hasher
    finally:
        hasher.writer_done.set()
        hasher.join()


def checksum_of(path: Path, hasher: _FollowingHasher) -> str:
    """The digest the hasher computed, when it saw the whole file; else computed again."""
    return (
        hasher.digest if hasher.digest and hasher.size == path.stat().st_size else sha256_of(path)
    )


def verify_checksum(path: Path) -> None:
    side = path.with_name(path.name + ".sha256")
    if not side.is_file():
        raise StackError(f"{path} has no {side.name} beside it; refusing an unverifiable file")
    expected = side.read_text().split()[0]
    actual = sha256_of(path)
    if actual != expected:
        raise StackError(
            f"{path} fails its checksum (expected {expected[:12]}…, got {actual[:12]}…)"
        )


@dataclass(frozen=True)
class Database:
    """The stack's PostgreSQL, reached through ``docker compose exec db``."""

    compose: Compose
    user: str
    name: str

    @classmethod
    def of(cls, compose: Compose, settings: Settings) -> Database:
        return cls(compose, settings.get("POSTGRES_USER", "mediacms"),
                   settings.get("POSTGRES_DB", "mediacms"))  # fmt: skip

    def psql_argv(self, sql: str) -> list[str]:
        return self.compose.argv("exec", "-T", "db", "psql", "-U", self.user, "-d", self.name,
                                 "-v", "ON_ERROR_STOP=1", "-At", "-F", "\t", "-c", sql)  # fmt: skip

    def query(self, c: Context, sql: str) -> list[list[str]]:
        result = c.run(" ".join(_q(a) for a in self.psql_argv(sql)), hide=True, warn=True)
        if not result.ok:
            raise StackError(f"psql failed: {result.stderr.strip()}")
        return [line.split("\t") for line in result.stdout.splitlines() if line]

    def row_counts(self, c: Context) -> dict[str, int]:
        return {table: int(count) for table, count in self.query(c, COUNT_ROWS_SQL)}

    def migrations(self, c: Context) -> list[str]:
        try:
            return [row[0] for row in self.query(c, MIGRATIONS_SQL)]
        except StackError:
            return []

    def dump_argv(self) -> list[str]:
        """Plain pg_dump (custom format) to stdout."""
        return self.compose.argv("exec", "-T", "db", "pg_dump", "-U", self.user, "-d", self.name,
                                 "--format=custom", "--no-owner", "--no-privileges")  # fmt: skip

    def snapshot_dump_argv(self) -> list[str]:
        """The dump on stdout, the manifest's counts and migrations of the same snapshot on
        stderr (see :data:`DUMP_SCRIPT`): one ``docker compose exec`` for all of it."""
        return self.compose.argv("exec", "-T", "db", "sh", "-c", DUMP_SCRIPT, "pg-dump",
                                 self.user, self.name, MANIFEST_SQL)  # fmt: skip

    def restore_argv(self) -> list[str]:
        return self.compose.argv("exec", "-T", "db", "pg_restore", "-U", self.user,
                                 "-d", self.name, "--clean", "--if-exists", "--no-owner",
                                 "--no-privileges", "--single-transaction",
                                 "--exit-on-error")  # fmt: skip

    def replace_argv(self) -> list[str]:
        """Replace the public schema with the archive on stdin, in one transaction (see
        :data:`RESTORE_SCRIPT`); unlike ``pg_restore --clean``, tables the archive does not
        have are dropped too."""
        return self.compose.argv("exec", "-T", "db", "sh", "-c", RESTORE_SCRIPT, "pg-restore",
                                 self.user, self.name)  # fmt: skip


def _q(arg: str) -> str:
    import shlex

    return shlex.quote(str(arg))


def stack_images(c: Context, compose: Compose) -> dict[str, tuple[str, str]]:
    """Service -> (image reference, image id) that the stack's containers run.

    One Engine API call (the container list carries the image id); one-off containers
    (``compose run``) are left out. Empty when the engine cannot be asked.
    """
    import docker  # deferred: keeps `invoke --list` fast
    import docker.errors
    import requests.exceptions

    project = compose.project or next((r.get("Project") for r in compose.ps(c)), None)
    if not project:
        return {}
    filters = {"label": [f"com.docker.compose.project={project}"]}
    try:
        client = docker.from_env()
        try:
            rows = client.api.containers(all=True, filters=filters)
        finally:
            client.close()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
        return {}
    images = {}
    for row in sorted(rows, key=lambda r: r.get("Created", 0)):
        labels = row.get("Labels") or {}
        if labels.get("com.docker.compose.oneoff") == "True":
            continue
        service = labels.get("com.docker.compose.service", row.get("Image", "?"))
        images[service] = (row.get("Image", ""), row.get("ImageID", ""))
    return dict(sorted(images.items()))


def image_digests(c: Context, compose: Compose) -> dict[str, str]:
    """Service -> image id of the running stack (what exactly produced this backup)."""
    return {service: image_id for service, (_, image_id) in stack_images(c, compose).items()}


def backup_db(
    c: Context,
    compose: Compose,
    settings: Settings,
    dest: Path,
    *,
    keep: int | None = None,
    prefix: str = "mediacms-db",
) -> Path:
    """pg_dump (custom format) out of the db container into ``dest``; returns the file."""
    from .shell import run

    db = Database.of(compose, settings)
    partial = temp_name(dest, prefix, ".dump")
    if compose.dry_run:
        run(c, db.snapshot_dump_argv(), stdout_to=str(partial), dry_run=True)
        final = dest / f"{prefix}-{utc_stamp()}.dump"
        print(f"(dry run) would rename {partial} -> {final}, write .sha256 and manifest")
        return final
    backup_dir(dest)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool, hashed_while_written(partial) as hasher:
        images = pool.submit(image_digests, c, compose)  # asked while the dump runs
        result = run(c, db.snapshot_dump_argv(), stdout_to=str(partial), warn=True, hide="err",
                     in_stream=False)  # fmt: skip
        seconds = time.monotonic() - started
    counts, migrations, messages = parse_manifest_lines(result.stderr if result is not None else "")
    if result is None or not result.ok:
        partial.unlink(missing_ok=True)
        message = "\n".join(messages[-20:]) or "pg_dump failed"
        raise StackError(f"backup-db failed, no file written: {message}")
    final = publish(partial, dest, prefix, ".dump")
    write_checksum(final, checksum_of(final, hasher))
    manifest = {
        "kind": "postgresql-custom-dump",
        "project": compose.project,
        "file": final.name,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "bytes": final.stat().st_size,
        "mediacms_version": settings.version,
        "database": db.name,
        "images": images.result(),
        "migrations": migrations,
        "row_counts": counts,
    }
    write_json(final.with_name(final.name + ".manifest.json"), manifest)
    print(f"[backup-db] {final} ({manifest['bytes']} bytes, {len(counts)} tables)")
    if keep:
        prune(dest, f"{prefix}-*.dump", keep, compose.project)
    return final


def temp_name(dest: Path, prefix: str, suffix: str) -> Path:
    """Where a backup is written before :func:`publish`: unique to this process."""
    return dest / f".{prefix}-{utc_stamp()}{suffix}.{os.getpid()}.partial"


def publish(partial: Path, dest: Path, prefix: str, suffix: str) -> Path:
    """Give a finished backup its final, time-stamped name, never replacing another
    backup (a hard link fails when the name exists; then the next second is taken)."""
    for _ in range(40):
        final = dest / f"{prefix}-{utc_stamp()}{suffix}"
        try:
            os.link(partial, final)
        except FileExistsError:
            time.sleep(0.1)
            continue
        partial.unlink()
        return final
    raise StackError(f"no free backup name in {dest} for {prefix}-*{suffix}; {partial} is kept")


def _written_by(path: Path, project: str | None) -> bool:
    side = path.with_name(path.name + ".manifest.json")
    try:
        return json.loads(side.read_text()).get("project") == project
    except (OSError, ValueError):
        return False


def prune(dest: Path, pattern: str, keep: int, project: str | None) -> list[Path]:
    """Delete all but the newest ``keep`` backups that ``project`` wrote (its name in
    their manifest), with their side files; other projects' backups are never touched."""
    ours = sorted(path for path in dest.glob(pattern) if _written_by(path, project))
    removed = ours[:-keep] if keep > 0 else []
    for path in removed:
        for side in (path, *path.parent.glob(path.name + ".*")):
            side.unlink(missing_ok=True)
        print(f"[backup] retention: removed {path.name}")
    return removed


def check_dump_file(path: Path) -> None:
    if not path.is_file():
        raise StackError(f"{path} does not exist")
    with path.open("rb") as handle:
        head = handle.read(len(PGDUMP_MAGIC))
    if head != PGDUMP_MAGIC:
        raise StackError(f"{path} is not a pg_dump custom-format archive; nothing was touched")
    verify_checksum(path)


def _expected_counts(dump: Path) -> dict[str, int] | None:
    manifest_path = dump.with_name(dump.name + ".manifest.json")
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return manifest.get("row_counts")


def _replace_db(c: Context, db: Database, dump: Path, expected: dict[str, int] | None) -> dict:
    """Replace the database with ``dump`` in one transaction; check the manifest's counts."""
    from .shell import run

    result = run(c, db.replace_argv(), stdin_from=str(dump), warn=True, hide="err")
    if result is None or not result.ok:
        raise StackError(
            "restoring the dump failed; the transaction was rolled back and the database "
            f"is as it was: {(result.stderr.strip() if result is not None else '')[-1500:]}"
        )
    restored = db.row_counts(c)
    if expected is not None:
        diff = {t: (n, restored.get(t)) for t, n in expected.items() if restored.get(t) != n}
        if diff:
            raise StackError(f"row counts differ from the manifest after restore: {diff}")
        print(f"[restore-db] row counts match the manifest ({len(expected)} tables)")
    return restored


def _safety_dump(
    c: Context, compose: Compose, settings: Settings, *, yes: bool, safety_dir: Path
) -> Path | None:
    """Refuse a non-empty database without ``yes``; dump it first when it has tables."""
    current = Database.of(compose, settings).row_counts(c)
    if any(current.values()) and not yes:
        raise StackError(
            f"the database holds {sum(current.values())} rows; pass --yes to replace them "
            "(a safety backup is taken first)"
        )
    if not current:
        return None
    safety = backup_db(c, compose, settings, safety_dir, prefix="pre-restore")
    print(f"[restore-db] safety backup: {safety}")
    return safety


def restore_db(
    c: Context,
    compose: Compose,
    settings: Settings,
    dump: Path,
    *,
    yes: bool = False,
    safety_dir: Path,
) -> dict[str, int]:
    """Restore ``dump`` into the stack's database, atomically; returns the new row counts."""
    from .shell import run

    check_dump_file(dump)
    db = Database.of(compose, settings)
    if compose.dry_run:
        print(f"(dry run) verified {dump}; would take a safety backup into {safety_dir}, stop "
              f"{', '.join(APP_SERVICES)}, replace the database and start them")  # fmt: skip
        run(c, db.replace_argv(), stdin_from=str(dump), dry_run=True)
        return {}
    _safety_dump(c, compose, settings, yes=yes, safety_dir=safety_dir)
    compose.run(c, "stop", *APP_SERVICES)
    try:
        return _replace_db(c, db, dump, _expected_counts(dump))
    finally:
        compose.up(c, *APP_SERVICES)


def volume_argv(compose: Compose, program: str, *args: str) -> list[str]:
    """``program`` in a throwaway web container that mounts the media volume."""
    return compose.argv("run", "--rm", "--no-deps", "-T", "--entrypoint", program, "web", *args)


def tar_argv(compose: Compose, *tar_args: str) -> list[str]:
    """GNU tar in a throwaway web container, in the media volume."""
    return volume_argv(compose, "tar", "-C", MEDIA_DIR, *tar_args)


def backup_media(
    c: Context,
    compose: Compose,
    dest: Path,
    *,
    keep: int | None = None,
    prefix: str = "mediacms-media",
) -> Path:
    from .shell import run

    partial = temp_name(dest, prefix, ".tar.gz")
    argv = tar_argv(compose, "--create", "--gzip", "--numeric-owner", "--totals",
                    "--checkpoint=20000", "--checkpoint-action=echo=%T",
                    f"--exclude=./{STAGE_PREFIX}*", "--file=-", ".")  # fmt: skip
    if compose.dry_run:
        run(c, argv, stdout_to=str(partial), dry_run=True)
        return dest / f"{prefix}-{utc_stamp()}.tar.gz"
    backup_dir(dest)
    with hashed_while_written(partial) as hasher:
        result = run(c, argv, stdout_to=str(partial), warn=True, in_stream=False)
    if result is None or not result.ok:
        partial.unlink(missing_ok=True)
        raise StackError("backup-media failed, no file written (see tar's message above)")
    final = publish(partial, dest, prefix, ".tar.gz")
    write_checksum(final, checksum_of(final, hasher))
    write_json(final.with_name(final.name + ".manifest.json"), {
        "kind": "media-tar-gz", "project": compose.project, "file": final.name,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "bytes": final.stat().st_size})  # fmt: skip
    print(f"[backup-media] {final} ({final.stat().st_size} bytes)")
    if keep:
        prune(dest, f"{prefix}-*.tar.gz", keep, compose.project)
    return final


def check_archive(archive: Path) -> None:
    """A .tar.gz with a matching .sha256 whose every entry is a plain file or folder."""
    if not archive.is_file():
        raise StackError(f"{archive} does not exist")
    with archive.open("rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            raise StackError(f"{archive} is not a gzip-compressed tar; nothing was touched")
    verify_checksum(archive)
    files.check_tar(archive)


#: GNU tar's extraction into the media volume: files get the restoring user (the web
#: image's www-data) and its umask, never the archive's owners or special bits.
EXTRACT_FLAGS = ("--extract", "--gzip", "--no-same-owner", "--no-same-permissions",
                 "--no-overwrite-dir", "--totals", "--file=-")  # fmt: skip

#: What a media restore runs in a throwaway web container (``sh -c SCRIPT media-swap
#: MEDIA_DIR MODE [STAGE]``), in three steps so that a full restore can undo it:
#: ``swap`` extracts the archive on stdin into a new staging folder inside the volume,
#: then moves the live entries into ``STAGE/old`` and the extracted ones into place
#: (renames on one file system), undoing itself when a move fails, and prints STAGE;
#: ``commit`` deletes the old tree; ``undo`` puts the old tree back. Until ``commit``,
#: the previous media are whole in ``STAGE/old``.
SWAP_SCRIPT = r"""set -u
cd "$1" || exit 1
mode=$2
live() { find . -mindepth 1 -maxdepth 1 ! -name 'STAGE_PREFIX*' -exec "$@" {} +; }
back() { find "$1/old" -mindepth 1 -maxdepth 1 -exec mv -t . {} +; }
case $mode in
swap)
  stage=$(mktemp -d STAGE_PREFIXXXXXXX) || exit 1
  if ! mkdir "$stage/new" "$stage/old"; then rm -rf "$stage"; exit 1; fi
  if ! tar -C "$stage/new" EXTRACT_FLAGS; then
    rm -rf "$stage"
    echo "extracting the archive failed; the media volume is unchanged" >&2
    exit 1
  fi
  if ! live mv -t "$stage/old"; then
    back "$stage" && rm -rf "$stage"
    echo "moving the current media aside failed; the media volume is unchanged" >&2
    exit 1
  fi
  if ! find "$stage/new" -mindepth 1 -maxdepth 1 -exec mv -t . {} +; then
    live rm -rf && back "$stage" && rm -rf "$stage"
    echo "moving the restored media in failed; the previous media are back" >&2
    exit 1
  fi
  rmdir "$stage/new"
  echo "$stage"
  ;;
commit) rm -rf "$3" ;;
undo) live rm -rf && back "$3" && rm -rf "$3" ;;
*) exit 2 ;;
esac
""".replace("EXTRACT_FLAGS", " ".join(EXTRACT_FLAGS)).replace("STAGE_PREFIX", STAGE_PREFIX)


def media_swap_argv(compose: Compose, mode: str, *stage: str) -> list[str]:
    return volume_argv(compose, "sh", "-c", SWAP_SCRIPT, "media-swap", MEDIA_DIR, mode, *stage)


def media_entries(c: Context, compose: Compose) -> int:
    """How many entries the media volume holds at its top (staging folders aside)."""
    from .shell import run

    argv = volume_argv(compose, "find", MEDIA_DIR, "-mindepth", "1", "-maxdepth", "1",
                       "!", "-name", f"{STAGE_PREFIX}*")  # fmt: skip
    result = run(c, argv, hide=True, warn=True, in_stream=False)
    if result is None or not result.ok:
        raise StackError(f"cannot read the media volume: {result.stderr.strip() if result else ''}")
    return len(result.stdout.splitlines())


def swap_media(c: Context, compose: Compose, archive: Path) -> str:
    """Replace the media volume's content with ``archive``; returns the staging folder
    that holds the previous media until :func:`finish_media`."""
    from .shell import run

    result = run(c, media_swap_argv(compose, "swap"), stdin_from=str(archive), warn=True,
                 hide="out")  # fmt: skip
    if compose.dry_run:
        return f"{STAGE_PREFIX}XXXXXX"
    stage = result.stdout.strip().splitlines()[-1] if result is not None and result.ok else ""
    if not stage.startswith(STAGE_PREFIX):
        raise StackError("restoring the media failed; the media volume is as it was "
                         "(see the message above)")  # fmt: skip
    return stage


def finish_media(c: Context, compose: Compose, stage: str, *, undo: bool = False) -> None:
    """Delete the previous media kept by :func:`swap_media`, or (``undo``) put them back."""
    from .shell import run

    result = run(c, media_swap_argv(compose, "undo" if undo else "commit", stage), warn=True,
                 dry_run=compose.dry_run, in_stream=False)  # fmt: skip
    if result is not None and not result.ok:
        where = f"{MEDIA_DIR}/{stage}/old"
        raise StackError(f"could not {'put back' if undo else 'remove'} the previous media in "
                         f"the volume's {where}; move them by hand")  # fmt: skip


def restore_media(c: Context, compose: Compose, archive: Path, *, yes: bool = False) -> None:
    """Replace the media volume's content with a verified archive, app services stopped."""
    check_archive(archive)
    if compose.dry_run:
        print(f"(dry run) would stop {', '.join(APP_SERVICES)}, replace the media with "
              f"{archive} and start them again")  # fmt: skip
        swap_media(c, compose, archive)
        return
    held = media_entries(c, compose)
    if held and not yes:
        raise StackError(f"the media volume holds {held} entries; pass --yes to replace them "
                         "with the archive's (they are kept until the new ones are in place)")  # fmt: skip
    compose.run(c, "stop", *APP_SERVICES)
    try:
        stage = swap_media(c, compose, archive)
        finish_media(c, compose, stage)
    finally:
        compose.up(c, *APP_SERVICES)
    print(f"[restore-media] the media volume now holds exactly {archive.name}'s files")


def _restorable(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Refuse, while backing up custom/, an entry that a restore would refuse."""
    why = files.refusal(member)
    if why:
        raise StackError(f"custom/{member.name.removeprefix('./')} {why}; a restore would "
                         "refuse it: replace it with a plain file")  # fmt: skip
    return member


def backup_all(c: Context, compose: Compose, settings: Settings, dest_root: Path) -> Path:
    """db + media + custom/ + .env + manifest in one folder."""
    folder = dest_root / f"mediacms-{utc_stamp()}"
    if compose.dry_run:
        print(f"(dry run) would write a full backup into {folder}")
    if not compose.dry_run:
        backup_dir(dest_root)
        for _ in range(40):  # a folder of its own, even when another backup started
            folder = dest_root / f"mediacms-{utc_stamp()}"
            try:
                folder.mkdir(mode=files.DIR_MODE)
                break
            except FileExistsError:
                time.sleep(0.1)
        else:
            raise StackError(f"no free backup folder name in {dest_root}")
        folder.chmod(files.DIR_MODE)
    dump = backup_db(c, compose, settings, folder)
    media = backup_media(c, compose, folder)
    if compose.dry_run:
        return folder
    custom = settings.root / "custom"
    if custom.is_dir():
        archive = folder / "custom.tar.gz"
        with (
            files.private_writer(archive, "wb") as handle,
            tarfile.open(fileobj=handle, mode="w:gz") as tar,
        ):
            tar.add(custom, arcname=".", filter=_restorable)
        write_checksum(archive)
    env = settings.env_file
    if env is not None and env.is_file():
        files.copy_private(env, folder / "env")
    manifest = {
        "project": compose.project,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "mediacms_version": settings.version,
        "images": {service: list(image) for service, image in stack_images(c, compose).items()},
        "database": dump.name,
        "media": media.name,
        "custom": "custom.tar.gz" if custom.is_dir() else None,
        "env": "env" if (folder / "env").exists() else None,
    }
    write_json(folder / "manifest.json", manifest)
    print(f"[backup] {folder}")
    return folder


def _part(folder: Path, name: object) -> Path:
    """A file the manifest names: a plain name inside ``folder``, nothing else."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
        raise StackError(f"{folder}/manifest.json names {name!r}, not a file of the folder; "
                         "nothing was touched")  # fmt: skip
    return folder / name


@dataclass(frozen=True)
class BackupSet:
    """The verified parts of a folder made by ``invoke backup``."""

    folder: Path
    manifest: dict
    dump: Path
    media: Path
    custom: Path | None


def check_backup_folder(folder: Path) -> BackupSet:
    """Read the manifest and verify every artifact it names; touches nothing."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise StackError(f"{folder} has no manifest.json: not a backup made by `invoke backup`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise StackError(f"{manifest_path} is not readable JSON ({error}); nothing was "
                         "touched") from error  # fmt: skip
    dump, media = (_part(folder, manifest.get(key)) for key in ("database", "media"))
    custom = _part(folder, manifest["custom"]) if manifest.get("custom") else None
    check_dump_file(dump)
    for archive in (media, custom):  # every part is checked before anything changes
        if archive is not None:
            check_archive(archive)
    return BackupSet(folder, manifest, dump, media, custom)


def swap_custom(archive: Path, target: Path) -> Path | None:
    """Replace the folder ``target`` with the archive's content by two renames; returns
    where the previous folder is kept (None when there was none)."""
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}-restore-", dir=target.parent))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staged, filter="data")
        staged.chmod(stat.S_IMODE(target.stat().st_mode) if target.is_dir() else 0o755)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = staged.with_name(staged.name + "-previous")
        target.rename(old)
    staged.rename(target)
    return old


def undo_custom(target: Path, old: Path | None) -> None:
    shutil.rmtree(target, ignore_errors=True)
    if old is not None:
        old.rename(target)


def restore_all(
    c: Context,
    compose: Compose,
    settings: Settings,
    folder: Path,
    *,
    yes: bool,
    safety_dir: Path,
    start: bool = True,
) -> None:
    """Replace database, media and custom/ with a backup's, all or nothing.

    Every artifact is verified first. Then, app services stopped: a safety dump of the
    database, the database replaced, the media swapped (previous media kept), custom/
    swapped (previous folder kept). When any step fails, the earlier ones are undone
    (the safety dump restored, the previous media and custom/ put back). ``start``: the
    app services are started again at the end (an upgrade rollback starts them itself).
    """
    parts = check_backup_folder(folder)
    custom_dir = settings.root / "custom"
    db = Database.of(compose, settings)
    if compose.dry_run:
        print(
            f"(dry run) verified {folder}: database {parts.dump.name}, media "
            f"{parts.media.name}, custom/ {parts.custom.name if parts.custom else '(none)'}"
        )
        print(f"(dry run) would take a safety backup into {safety_dir}, stop "
              f"{', '.join(APP_SERVICES)}, replace the database, the media volume and "
              f"{custom_dir}, then start them; nothing was changed")  # fmt: skip
        return
    safety = _safety_dump(c, compose, settings, yes=yes, safety_dir=safety_dir)
    undo: list[tuple[str, object]] = []
    compose.run(c, "stop", *APP_SERVICES)
    try:
        undo.append(("database", safety))
        _replace_db(c, db, parts.dump, _expected_counts(parts.dump))
        stage = swap_media(c, compose, parts.media)
        undo.append(("media", stage))
        if parts.custom is not None:
            undo.append(("custom", swap_custom(parts.custom, custom_dir)))
    except BaseException as error:
        _undo(c, compose, db, undo, custom_dir)
        compose.up(c, *APP_SERVICES)
        if isinstance(error, StackError):
            raise StackError(f"{error}\nthe restore was undone: database, media and custom/ "
                             "are as they were before it") from error  # fmt: skip
        raise
    for kind, kept in undo:  # every part is in place: drop what the undo needed
        if kind == "media":
            finish_media(c, compose, str(kept))
        elif kind == "custom" and kept is not None:
            shutil.rmtree(kept)
    if start:
        compose.up(c, *APP_SERVICES)
    print(f"[restore] {folder} restored (the saved .env is at {folder / 'env'}; not applied)")


def _undo(c: Context, compose: Compose, db: Database, done: list, custom_dir: Path) -> None:
    """Put back what :func:`restore_all` replaced, the last step first; every step is
    tried, and those that fail are named."""
    from .shell import run

    failed = []
    for kind, kept in reversed(done):
        try:
            if kind == "custom":
                undo_custom(custom_dir, kept)
            elif kind == "media":
                finish_media(c, compose, str(kept), undo=True)
            elif kept is not None:  # the database, from its safety dump
                result = run(c, db.replace_argv(), stdin_from=str(kept), warn=True, hide="err")
                if result is None or not result.ok:
                    raise StackError(f"restore the safety backup {kept} with invoke restore-db")
            else:  # it had no tables before
                db.query(c, "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
        except (StackError, OSError) as error:
            failed.append(f"{kind}: {error}")
    if failed:
        raise StackError("the restore failed and could not be fully undone:\n  "
                         + "\n  ".join(failed))  # fmt: skip
