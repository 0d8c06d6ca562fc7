"""Backups that are proven to restore: database, media, and whole-instance sets.

The database is dumped through :mod:`database`, files are written and published by
:mod:`artifacts`, and :mod:`restore` puts them back.
"""

from __future__ import annotations

import shutil
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from invoke.context import Context

from ..engines import shell, stackstate
from ..engines.compose import Compose
from ..engines.shell import dry
from ..stack import files
from ..stack.config import Settings
from ..stack.errors import StackError
from ..stack.model import MEDIA_DIR
from .artifacts import (
    backup_dir,
    checksum_of,
    hashed_while_written,
    prune,
    publish,
    temp_name,
    utc_stamp,
    write_checksum,
    write_json,
)
from .database import Database, parse_manifest_lines

#: Name prefix of the staging folders a media restore makes at the top of the volume
#: (a dotfile: nginx never serves it, and backups leave it out).
STAGE_PREFIX = ".mediacms-restore-"


def backup_db(c: Context, compose: Compose, settings: Settings, dest: Path, *,
              keep: int | None = None, prefix: str = "mediacms-db") -> Path:  # fmt: skip
    """pg_dump (custom format) out of the db container into ``dest``; returns the file."""
    db = Database.of(compose, settings)
    argv = db.snapshot_dump_argv()  # on Swarm it may refuse: before any file exists
    partial = temp_name(dest, prefix, ".dump")
    if dry(c):
        shell.run(c, argv, stdout_to=str(partial))
        final = dest / f"{prefix}-{utc_stamp()}.dump"
        print(f"(dry run) would rename {partial} -> {final}, write .sha256 and manifest")
        return final
    backup_dir(dest)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool, hashed_while_written(partial) as hasher:
        images = pool.submit(stackstate.image_ids, c, compose)  # asked while the dump runs
        result = shell.run(c, argv, stdout_to=str(partial), warn=True, hide="err", in_stream=False)
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
    shell.say(f"database: {final} ({manifest['bytes']} bytes, {len(counts)} tables)")
    if keep:
        prune(dest, f"{prefix}-*.dump", keep, compose.project)
    return final


def volume_argv(compose: Compose, program: str, *args: str) -> list[str]:
    """``program`` in a throwaway web container that mounts the media volume."""
    return compose.argv("run", "--rm", "--no-deps", "-T", "--entrypoint", program, "web", *args)


#: The media archive's shell, in a throwaway web container: first every entry that a
#: restore refuses (files.refusal: links, devices, FIFOs, sockets, set-id or sticky bits;
#: and files of several hard links, which tar stores as links) is listed, one "refused: "
#: line each, and nothing is archived (exit 65); else GNU tar ("$@") runs in the volume.
#: A restore's own staging folders ($2, STAGE_PREFIX) are left out of both.
ARCHIVE_SCRIPT = r"""set -u
cd "$1" || exit 1
stage=$2
shift 2
found=$(find . -path "./$stage*" -prune -o \( ! -type f ! -type d -o -perm /7000 \
    -o -type f -links +1 \) -printf 'refused: %p (%y, mode %m, %n links) %l\n' | head -n 50)
if [ -n "$found" ]; then printf '%s\n' "$found" >&2; exit 65; fi
exec tar --exclude="./$stage*" "$@"
"""
REFUSED = "refused: "


def archive_argv(compose: Compose, *tar_args: str) -> list[str]:
    """GNU tar in a throwaway web container, in the media volume, once nothing there is
    what a restore would refuse (ARCHIVE_SCRIPT)."""
    return volume_argv(compose, "sh", "-c", ARCHIVE_SCRIPT, "backup-media", MEDIA_DIR,
                       STAGE_PREFIX, *tar_args)  # fmt: skip


def backup_media(
    c: Context,
    compose: Compose,
    dest: Path,
    *,
    keep: int | None = None,
    prefix: str = "mediacms-media",
) -> Path:
    partial = temp_name(dest, prefix, ".tar.gz")
    argv = archive_argv(compose, "--create", "--gzip", "--numeric-owner", "--totals",
                        "--checkpoint=20000", "--checkpoint-action=echo=%T",
                        "--file=-", ".")  # fmt: skip
    if dry(c):
        shell.run(c, argv, stdout_to=str(partial))
        return dest / f"{prefix}-{utc_stamp()}.tar.gz"
    backup_dir(dest)
    with hashed_while_written(partial) as hasher:
        result = shell.run(c, argv, stdout_to=str(partial), warn=True, in_stream=False)
    if result is None or not result.ok:
        partial.unlink(missing_ok=True)
        said = result.stderr.splitlines() if result is not None else []
        refused = [line.removeprefix(REFUSED) for line in said if line.startswith(REFUSED)]
        if refused:
            raise StackError(
                "backup-media refused, no file written: the media volume holds entries a "
                "restore would refuse:\n  " + "\n  ".join(refused)
                + "\nreplace each with a plain file, or remove it, then back up again"
            )  # fmt: skip
        raise StackError("backup-media failed, no file written (see tar's message above)")
    final = publish(partial, dest, prefix, ".tar.gz")
    write_checksum(final, checksum_of(final, hasher))
    write_json(final.with_name(final.name + ".manifest.json"), {
        "kind": "media-tar-gz", "project": compose.project, "file": final.name,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "bytes": final.stat().st_size,
        "files": files.tar_checksums(final)})  # fmt: skip
    shell.say(f"media: {final} ({final.stat().st_size} bytes)")
    if keep:
        prune(dest, f"{prefix}-*.tar.gz", keep, compose.project)
    return final


def _restorable(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Refuse, while backing up custom/, an entry that a restore would refuse."""
    why = files.refusal(member)
    if why:
        raise StackError(f"custom/{member.name.removeprefix('./')} {why}; a restore would "
                         "refuse it: replace it with a plain file")  # fmt: skip
    return member


def backup_all(
    c: Context, compose: Compose, settings: Settings, dest_root: Path, *, keep: int | None = None
) -> Path:
    """db + media + custom/ + .env + manifest in one folder; ``keep``: only the newest
    ``keep`` folders of this project stay."""
    folder = dest_root / f"mediacms-{utc_stamp()}"
    if dry(c):
        print(f"(dry run) would write a full backup into {folder}")
    if not dry(c):
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
    try:
        dump = backup_db(c, compose, settings, folder)
        media = backup_media(c, compose, folder)
        if dry(c):
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
        if settings.env_file.is_file():
            files.copy_private(settings.env_file, folder / "env")
        manifest = {
            "project": compose.project,
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "mediacms_version": settings.version,
            "images": {
                service: list(image)
                for service, image in stackstate.stack_images(c, compose).items()
            },
            "database": dump.name,
            "media": media.name,
            "custom": "custom.tar.gz" if custom.is_dir() else None,
            "env": "env" if (folder / "env").exists() else None,
        }
        write_json(folder / "manifest.json", manifest)
    except BaseException:
        if not dry(c):  # a failed backup leaves no folder behind
            shutil.rmtree(folder, ignore_errors=True)
        raise
    shell.say(f"full backup: {folder}")
    if keep:
        prune(dest_root, "mediacms-2*", keep, compose.project)  # folders, named by their time
    return folder
