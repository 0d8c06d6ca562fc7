"""Restores that replace, never merge, and change nothing when they fail.

Every artifact is verified (:mod:`artifacts`) before anything changes; after a safety
dump, the database is loaded in one transaction while the previous schema waits aside
(:data:`database.RESTORE_SCRIPT`); the media are swapped inside their
volume with the previous tree kept until the new one is in place; custom/ is swapped
by renames; a full restore undoes its earlier steps when a later one fails.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from invoke.context import Context

from ..engines import shell
from ..engines.compose import Compose
from ..engines.shell import dry, say
from ..engines.steps import Steps, UndoFailed
from ..stack.config import Settings
from ..stack.errors import StackError
from ..stack.model import APP_SERVICES, MEDIA_DIR
from . import backup
from .artifacts import BackupSet, check_archive, check_backup_folder, check_dump_file
from .backup import STAGE_PREFIX, volume_argv
from .database import Database, compare_counts


def _expected_counts(dump: Path) -> dict[str, int] | None:
    manifest_path = dump.with_name(dump.name + ".manifest.json")
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return manifest.get("row_counts")


def _replace_db(c: Context, db: Database, dump: Path, expected: dict[str, int] | None) -> dict:
    """Replace the database with ``dump`` (all or nothing); check the manifest's counts."""
    result = shell.run(c, db.replace_argv(), stdin_from=str(dump), warn=True, hide="err")
    if result is None or not result.ok:
        raise StackError(
            "restoring the dump failed; the transaction was rolled back and the database "
            f"is as it was: {(result.stderr.strip() if result is not None else '')[-1500:]}"
        )
    restored = db.row_counts(c)
    if expected is not None:
        compare_counts(expected, restored, "in the manifest", "restored",
                       "row counts differ from the manifest after restore")  # fmt: skip
        say(f"row counts match the manifest ({len(expected)} tables)")
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
    safety = backup.backup_db(c, compose, settings, safety_dir, prefix="pre-restore")
    say(f"safety backup: {safety}")
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
    check_dump_file(dump)
    db = Database.of(compose, settings)
    if dry(c):
        print(f"(dry run) verified {dump}; would take a safety backup into {safety_dir}, stop "
              f"{', '.join(APP_SERVICES)}, replace the database and start them")  # fmt: skip
        shell.run(c, db.replace_argv(), stdin_from=str(dump))
        return {}
    compose.check_can_stop(c)
    _safety_dump(c, compose, settings, yes=yes, safety_dir=safety_dir)
    compose.run(c, "stop", *APP_SERVICES)
    try:
        return _replace_db(c, db, dump, _expected_counts(dump))
    finally:
        compose.up(c, *APP_SERVICES)


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
    argv = volume_argv(compose, "find", MEDIA_DIR, "-mindepth", "1", "-maxdepth", "1",
                       "!", "-name", f"{STAGE_PREFIX}*")  # fmt: skip
    result = shell.run(c, argv, query=True, hide=True, warn=True, in_stream=False)
    if result is None or not result.ok:
        raise StackError(f"cannot read the media volume: {result.stderr.strip() if result else ''}")
    return len(result.stdout.splitlines())


#: sha256 of every regular file of the media volume as JSON {path: digest}, read by the
#: web image's Python (``python -c SCRIPT MEDIA_DIR``); a restore's staging folders aside.
CHECKSUMS_SCRIPT = """import hashlib, json, os, sys
root = sys.argv[1]
sums = {}
for folder, subfolders, names in os.walk(root):
    if folder == root:
        subfolders[:] = [d for d in subfolders if not d.startswith(sys.argv[2])]
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path) and not os.path.islink(path):
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            sums[os.path.relpath(path, root)] = digest.hexdigest()
json.dump(sums, sys.stdout)
"""


def media_checksums(c: Context, compose: Compose) -> dict[str, str]:
    """sha256 of every file in the media volume, by its path inside the volume."""
    argv = volume_argv(compose, "python", "-c", CHECKSUMS_SCRIPT, MEDIA_DIR, STAGE_PREFIX)
    result = shell.run(c, argv, query=True, hide="out", warn=True, in_stream=False)
    if result is not None and result.ok:
        with contextlib.suppress(ValueError):
            return json.loads(result.stdout)
    raise StackError("cannot read the media volume's checksums (see the message above)")


def swap_media(c: Context, compose: Compose, archive: Path) -> str:
    """Replace the media volume's content with ``archive``; returns the staging folder
    that holds the previous media until :func:`finish_media`."""
    result = shell.run(c, media_swap_argv(compose, "swap"), stdin_from=str(archive), warn=True,
                 hide="out")  # fmt: skip
    if dry(c):
        return f"{STAGE_PREFIX}XXXXXX"
    stage = result.stdout.strip().splitlines()[-1] if result is not None and result.ok else ""
    if not stage.startswith(STAGE_PREFIX):
        raise StackError("restoring the media failed; the media volume is as it was "
                         "(see the message above)")  # fmt: skip
    return stage


def finish_media(c: Context, compose: Compose, stage: str, *, undo: bool = False) -> None:
    """Delete the previous media kept by :func:`swap_media`, or (``undo``) put them back."""
    result = shell.run(c, media_swap_argv(compose, "undo" if undo else "commit", stage), warn=True,
                       in_stream=False)  # fmt: skip
    if result is not None and not result.ok:
        where = f"{MEDIA_DIR}/{stage}/old"
        raise StackError(f"could not {'put back' if undo else 'remove'} the previous media in "
                         f"the volume's {where}; move them by hand")  # fmt: skip


def restore_media(c: Context, compose: Compose, archive: Path, *, yes: bool = False) -> None:
    """Replace the media volume's content with a verified archive, app services stopped."""
    check_archive(archive)
    if dry(c):
        print(f"(dry run) would stop {', '.join(APP_SERVICES)}, replace the media with "
              f"{archive} and start them again")  # fmt: skip
        swap_media(c, compose, archive)
        return
    compose.check_can_stop(c)
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
    say(f"the media volume now holds exactly {archive.name}'s files")


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
    stop: Sequence[str] = APP_SERVICES,
) -> None:
    """Replace database, media and custom/ with a backup's, all or nothing.

    Every artifact is verified first. Then, ``stop`` stopped (the app services; a rollback
    keeps nginx, which shows its 503 page meanwhile): a safety dump of the database, the
    database replaced, the media swapped (previous media kept), custom/ swapped (previous
    folder kept), each a step (:class:`Steps`). When any step fails, the earlier ones are
    undone (the safety dump restored, the previous media and custom/ put back). ``start``:
    they are started again at the end (an upgrade rollback starts them itself).
    """
    parts = check_backup_folder(folder)
    custom_dir = settings.root / "custom"
    db = Database.of(compose, settings)
    if dry(c):
        print(
            f"(dry run) verified {folder}: database {parts.dump.name}, media "
            f"{parts.media.name}, custom/ {parts.custom.name if parts.custom else '(none)'}"
        )
        print(f"(dry run) would take a safety backup into {safety_dir}, stop "
              f"{', '.join(stop)}, replace the database, the media volume and "
              f"{custom_dir}, then start them; nothing was changed")  # fmt: skip
        return
    compose.check_can_stop(c)
    safety = _safety_dump(c, compose, settings, yes=yes, safety_dir=safety_dir)
    steps = Steps(2 if parts.custom is None else 3)
    previous_custom: Path | None = None
    compose.run(c, "stop", *stop)
    try:
        with steps.step(f"the database from {parts.dump.name}"):
            steps.on_failure("the database", lambda: _put_back_db(c, db, safety))
            _replace_db(c, db, parts.dump, _expected_counts(parts.dump))
        with steps.step(f"the media from {parts.media.name}"):
            stage = swap_media(c, compose, parts.media)
            steps.on_failure("the media", lambda: finish_media(c, compose, stage, undo=True))
        if parts.custom is not None:
            with steps.step(f"custom/ from {parts.custom.name}"):
                previous_custom = swap_custom(parts.custom, custom_dir)
                steps.on_failure("custom/", lambda: undo_custom(custom_dir, previous_custom))
    except UndoFailed:
        raise
    except BaseException as error:
        compose.up(c, *stop)
        if isinstance(error, StackError):
            raise StackError(f"{error}\nthe restore was undone: database, media and custom/ "
                             "are as they were before it") from error  # fmt: skip
        raise
    # every part is in place: drop what the undos needed
    finish_media(c, compose, stage)
    if previous_custom is not None:
        shutil.rmtree(previous_custom)
    if start:
        compose.up(c, *stop)
    say(f"{folder} restored (the saved .env is at {folder / 'env'}; not applied)")


def restore_into_empty(c: Context, compose: Compose, settings: Settings,
                       parts: BackupSet) -> dict[str, int]:  # fmt: skip
    """The verified parts of a backup into a stack that holds nothing yet (backup-verify's
    throwaway): the same steps as :func:`restore_all`, with nothing to keep or undo.
    Returns the restored row counts, checked against the manifest's."""
    restored = _replace_db(c, Database.of(compose, settings), parts.dump,
                           _expected_counts(parts.dump))  # fmt: skip
    finish_media(c, compose, swap_media(c, compose, parts.media))
    if parts.custom is not None:
        old = swap_custom(parts.custom, settings.root / "custom")
        if old is not None:
            shutil.rmtree(old)
    return restored


def _put_back_db(c: Context, db: Database, safety: Path | None) -> None:
    """The database as it was before :func:`restore_all`: its safety dump restored, or
    emptied when it had no tables."""
    if safety is None:
        db.query(c, "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public", changes=True)
        return
    result = shell.run(c, db.replace_argv(), stdin_from=str(safety), warn=True, hide="err")
    if result is None or not result.ok:
        raise StackError(f"restore the safety backup {safety} with invoke restore-db")
