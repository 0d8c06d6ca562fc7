"""The database: dumped through the old deployment's own db service (or a dump the
operator gives), restored into the stack's PostgreSQL, row counts compared."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from invoke.context import Context

from ...data import artifacts, backup, database, plainsql
from ...engines.compose import Compose
from ...engines.shell import run, say
from ...stack.config import Settings
from ...stack.errors import StackError
from ...stack.model import APP_SERVICES, BACKUPS_DIR
from .legacy import OldDeployment


def check_given_dump(dump: Path) -> str:
    """'custom' or 'plain' for a pg_dump file; anything else is refused, and so is a
    plain dump that holds what psql could run as a meta-command (:mod:`plainsql`)."""
    if not dump.is_file():
        raise StackError(f"{dump} does not exist")
    with dump.open("rb") as handle:
        head = handle.read(4096)
    if head.startswith(artifacts.PGDUMP_MAGIC):
        return "custom"
    if b"PostgreSQL database dump" in head:
        plainsql.check(dump)
        return "plain"
    raise StackError(f"{dump} is neither a pg_dump archive nor a plain pg_dump SQL file")


def dump_old_database(c: Context, old: OldDeployment, dest: Path) -> tuple[Path, dict[str, int]]:
    """pg_dump through the old db service; returns the file and the old row counts."""
    was_running = old.db_service in old.running(c)
    if not was_running:
        old.compose.run(c, "up", "--detach", "--wait", old.db_service)
    db = old.database()
    try:
        db.wait_ready(c, what=f"the old '{old.db_service}' service")
        counts = db.row_counts(c)
        artifacts.backup_dir(dest)  # 700; dumps and manifests hold password hashes
        final = dest / f"migrate-7x-{artifacts.utc_stamp()}.dump"
        partial = dest / f".{final.name}.partial"
        with artifacts.hashed_while_written(partial) as hasher:  # created mode 600
            result = run(c, db.dump_argv(), stdout_to=str(partial), warn=True, hide="err",
                         in_stream=False)  # fmt: skip
        if result is None or not result.ok:
            partial.unlink(missing_ok=True)
            message = result.stderr.strip() if result is not None else ""
            raise StackError(f"pg_dump of the old database failed: {message or 'no output'}")
        partial.rename(final)
        artifacts.write_checksum(final, artifacts.checksum_of(final, hasher))  # 600
        manifest = {
            "kind": "postgresql-custom-dump",
            "file": final.name,
            "source": f"7.x deployment {old.tree}, PostgreSQL {old.pg_major()}",
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "row_counts": counts,
            "migrations": db.migrations(c),
        }
        artifacts.write_json(final.with_name(final.name + ".manifest.json"), manifest)
    finally:
        if not was_running:
            old.compose.run(c, "stop", old.db_service)
    say(f"old database: {sum(counts.values())} rows in {len(counts)} tables -> {final}")
    return final, counts


def new_database_rows(c: Context, compose: Compose, settings: Settings, *, start: bool) -> int:
    if start:
        compose.up(c, "db", "redis")
    return sum(database.Database.of(compose, settings).row_counts(c).values())


def restore_into_stack(
    c: Context, compose: Compose, settings: Settings, dump: Path, *, replace: bool
) -> dict[str, int]:
    """Load the dump into the stack's database; returns the row counts.

    ``replace``: the database holds data (the operator passed --yes): a safety backup is
    taken first. Either way the public schema is replaced as a whole (see
    :data:`database.RESTORE_SCRIPT`), so no table of a newer schema lingers.
    """
    db = database.Database.of(compose, settings)
    compose.up(c, "db", "redis")
    compose.run(c, "stop", *APP_SERVICES)
    if replace:
        safety = backup.backup_db(c, compose, settings, settings.root / BACKUPS_DIR,
                                  prefix="pre-migrate")  # fmt: skip
        say(f"safety backup of the new database: {safety}")
    result = run(c, db.replace_argv(check_given_dump(dump)), stdin_from=str(dump), warn=True,
                 hide="err")  # fmt: skip
    if result is None or not result.ok:
        raise StackError(
            "restoring the old database failed and was rolled back: "
            f"{(result.stderr if result else '').strip()[-1500:]}"
        )
    return db.row_counts(c)
