"""Backup files on the host: written under a temporary name, published under a name no
other backup has, each with a ``.sha256`` and a manifest; checked before any restore.

* a backup is streamed into a temporary name unique to the process and published only
  after the producing command exited 0, so a failure never leaves a file that looks
  like a backup, and two backups never share a name;
* a restore checks every file (checksum, format, every archive entry) before touching
  anything (:func:`check_backup_folder`, :func:`files.check_tar`);
* backup folders are mode 700 and every file in them 600; retention deletes only what
  the project wrote (its name in the manifest).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..engines.shell import say
from ..stack import config, files
from ..stack.errors import StackError
from ..stack.model import BACKUPS_DIR

PGDUMP_MAGIC = b"PGDMP"
#: What `invoke backup-verify` records in the backup folder it verified.
VERIFIED = "verified.json"
#: What `invoke backup --offsite` records in the backups folder: the project's last
#: snapshot, which `invoke status` shows without asking restic.
OFFSITE = "offsite-{project}.json"


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
    ours = dest.resolve() == (config.home() / BACKUPS_DIR).resolve()
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


def read_json(path: Path) -> dict | None:
    """A JSON object the project wrote; None when it is missing, unreadable or not an
    object (a record's reader says "none", it does not stop)."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def manifest_of(path: Path) -> dict:
    """The manifest of a backup file (beside it) or folder (in it); {} when unreadable."""
    side = path / "manifest.json" if path.is_dir() else path.with_name(path.name + ".manifest.json")
    return read_json(side) or {}


def _written_by(path: Path, project: str | None) -> bool:
    """Whether the manifest of a backup file or folder names ``project``."""
    return manifest_of(path).get("project") == project


def written_by(dest: Path, pattern: str, project: str | None) -> list[Path]:
    """The backups (files or folders) matching ``pattern`` that ``project`` wrote, oldest
    first."""
    return sorted(path for path in dest.glob(pattern) if _written_by(path, project))


def prune(dest: Path, pattern: str, keep: int, project: str | None) -> list[Path]:
    """Delete all but the newest ``keep`` backups (files with their side files, or full
    backup folders) that ``project`` wrote (its name in their manifest); other projects'
    backups are never touched."""
    ours = written_by(dest, pattern, project)
    removed = ours[:-keep] if keep > 0 else []
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path)
        for side in (path, *path.parent.glob(path.name + ".*")):
            side.unlink(missing_ok=True)
        say(f"retention: removed {path.name}")
    return removed


def latest(dest: Path, pattern: str, project: str | None) -> tuple[Path, datetime] | None:
    """The newest backup (file or folder) matching ``pattern`` that ``project`` wrote,
    with the time its manifest records; None when there is none."""
    for path in reversed(written_by(dest, pattern, project)):
        try:
            return path, datetime.fromisoformat(manifest_of(path)["created_utc"])
        except (KeyError, TypeError, ValueError):
            continue
    return None


def verification(folder: Path) -> dict | None:
    """What `invoke backup-verify` recorded in a backup folder; None when nothing."""
    return read_json(folder / VERIFIED)


def offsite_record(dest: Path, project: str | None) -> Path:
    """Where `invoke backup --offsite` records ``project``'s last snapshot: one file a
    project, as projects may share a backups folder."""
    return dest / OFFSITE.format(project=project)


def check_dump_file(path: Path) -> None:
    if not path.is_file():
        raise StackError(f"{path} does not exist")
    with path.open("rb") as handle:
        head = handle.read(len(PGDUMP_MAGIC))
    if head != PGDUMP_MAGIC:
        raise StackError(f"{path} is not a pg_dump custom-format archive; nothing was touched")
    verify_checksum(path)


def check_archive(archive: Path) -> None:
    """A .tar.gz with a matching .sha256 whose every entry is a plain file or folder."""
    if not archive.is_file():
        raise StackError(f"{archive} does not exist")
    with archive.open("rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            raise StackError(f"{archive} is not a gzip-compressed tar; nothing was touched")
    verify_checksum(archive)
    files.check_tar(archive)


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
