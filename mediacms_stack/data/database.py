"""The stack's PostgreSQL as the backups see it: dump and restore commands, queries.

Everything runs through ``docker compose exec db``; the scripts below are the whole of
what a dump or a restore does inside the container.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from invoke.context import Context

from ..engines.compose import Compose
from ..engines.shell import poll, run
from ..stack.config import Settings
from ..stack.errors import StackError

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

#: Where the public schema waits while a restore loads the dump into a new one.
PREVIOUS_SCHEMA = "mediacms_restore_previous"

#: What a restore runs inside the db container as its ``postgres`` user, never root
#: (``sh -c SCRIPT pg-restore USER DB FORMAT``, the dump on stdin), connected as
#: MediaCMS's role, which owns the database and so may replace its public schema:
#: the schema is renamed aside and an empty one made (one transaction); the dump is
#: loaded in one transaction, a custom-format archive by pg_restore straight into the
#: database (no psql reads it), a plain-SQL dump (checked by :mod:`plainsql` first)
#: by psql; then the previous schema is dropped, or, when the load failed, put back.
#: Tables the dump does not have (say, from a later migration) go with the old schema.
RESTORE_SCRIPT = r"""set -u
export PGOPTIONS="-c client_min_messages=warning"
sql() { psql -X -q -v ON_ERROR_STOP=1 -U "$1" -d "$2" -c "$3"; }
sql "$1" "$2" "DO \$aside\$ BEGIN
  IF to_regnamespace('PREVIOUS') IS NOT NULL THEN
    RAISE EXCEPTION 'schema PREVIOUS exists: an earlier restore stopped before its end and it holds the database from before that restore; rename it to public (dropping the public schema) or drop it, then restore again';
  END IF;
  IF to_regnamespace('public') IS NOT NULL THEN ALTER SCHEMA public RENAME TO PREVIOUS; END IF;
  CREATE SCHEMA public;
END \$aside\$" || exit 1
case $3 in
custom) pg_restore --no-owner --no-privileges --single-transaction -U "$1" -d "$2" ;;
plain) psql -X -q -v ON_ERROR_STOP=1 --single-transaction -U "$1" -d "$2" >/dev/null ;;
*) false ;;
esac
loaded=$?
if [ "$loaded" -eq 0 ]; then
  sql "$1" "$2" "DROP SCHEMA IF EXISTS PREVIOUS CASCADE" && exit 0
  echo "the dump is restored, but the previous data is still in schema PREVIOUS: drop it" >&2
  exit 1
fi
sql "$1" "$2" "DO \$back\$ BEGIN
  DROP SCHEMA public CASCADE;
  IF to_regnamespace('PREVIOUS') IS NOT NULL THEN ALTER SCHEMA PREVIOUS RENAME TO public;
  ELSE CREATE SCHEMA public; END IF;
END \$back\$" || {
  echo "the load failed and the previous data could not be put back: it is in schema PREVIOUS" >&2
  exit 1
}
echo "loading the dump failed (exit $loaded); its transaction was rolled back and the previous schema is back" >&2
exit 1
""".replace("PREVIOUS", PREVIOUS_SCHEMA)


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


@dataclass(frozen=True)
class Database:
    """A PostgreSQL database, reached through ``docker compose exec db`` (the stack's) or,
    given ``container``, through ``docker exec`` into that container (a one-off one)."""

    compose: Compose
    user: str
    name: str
    container: str | None = None

    @classmethod
    def of(cls, compose: Compose, settings: Settings) -> Database:
        return cls(compose, settings.get("POSTGRES_USER", "mediacms"),
                   settings.get("POSTGRES_DB", "mediacms"))  # fmt: skip

    def exec_argv(self, *command: str, as_postgres: bool = False) -> list[str]:
        """``command`` run in the database's container (as its ``postgres`` user)."""
        user = ["--user", "postgres"] if as_postgres else []
        if self.container is not None:
            return ["docker", "exec", "-i", *user, self.container, *command]
        return self.compose.argv("exec", "-T", *user, "db", *command)

    def psql_argv(self, sql: str) -> list[str]:
        return self.exec_argv("psql", "-U", self.user, "-d", self.name, "-v", "ON_ERROR_STOP=1",
                              "-At", "-F", "\t", "-c", sql)  # fmt: skip

    def query(self, c: Context, sql: str, *, changes: bool = False) -> list[list[str]]:
        """The rows ``sql`` returns; it runs in a dry run too unless it ``changes`` data."""
        result = run(c, self.psql_argv(sql), query=not changes, hide=True, warn=True,
                     in_stream=False)  # fmt: skip
        if result is None:
            return []
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

    def wait_ready(self, c: Context, *, timeout: float = 60, what: str = "the database") -> None:
        """Until the server accepts connections over TCP (during its first start the
        image's setup runs a server on the socket only, which is not it yet)."""
        argv = self.exec_argv("pg_isready", "-h", "127.0.0.1", "-U", self.user)
        poll(c, argv, lambda result: result.ok, timeout=timeout, interval=1,
             what=f"{what} did not accept connections", hide=True, warn=True, in_stream=False)  # fmt: skip

    def dump_argv(self) -> list[str]:
        """Plain pg_dump (custom format) to stdout."""
        return self.exec_argv("pg_dump", "-U", self.user, "-d", self.name, "--format=custom",
                              "--no-owner", "--no-privileges")  # fmt: skip

    def snapshot_dump_argv(self) -> list[str]:
        """The dump on stdout, the manifest's counts and migrations of the same snapshot on
        stderr (see :data:`DUMP_SCRIPT`): one ``docker compose exec`` for all of it."""
        return self.exec_argv("sh", "-c", DUMP_SCRIPT, "pg-dump", self.user, self.name,
                              MANIFEST_SQL)  # fmt: skip

    def replace_argv(self, dump_format: str = "custom") -> list[str]:
        """Replace the public schema with the dump on stdin (``custom``: a pg_dump archive;
        ``plain``: SQL that :func:`plainsql.check` passed), as the container's postgres
        user (see :data:`RESTORE_SCRIPT`); unlike ``pg_restore --clean``, tables the dump
        does not have are dropped too."""
        return self.exec_argv("sh", "-c", RESTORE_SCRIPT, "pg-restore", self.user, self.name,
                              dump_format, as_postgres=True)  # fmt: skip


def compare_counts(before: Mapping[str, int], after: Mapping[str, int], before_is: str,
                   after_is: str, what: str) -> None:  # fmt: skip
    """StackError ``what: TABLE N <before_is>, M <after_is>; ...`` naming every table whose
    count differs (a table missing after: ``no table``)."""
    diff = [f"{t} {n} {before_is}, {after.get(t, 'no table')} {after_is}"
            for t, n in before.items() if after.get(t) != n]  # fmt: skip
    if diff:
        raise StackError(f"{what}: {'; '.join(diff)}")
