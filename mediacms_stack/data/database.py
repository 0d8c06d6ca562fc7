"""The stack's PostgreSQL as the backups see it: dump and restore commands, queries.

Everything runs through ``docker compose exec db``; the scripts below are the whole of
what a dump or a restore does inside the container.
"""

from __future__ import annotations

from dataclasses import dataclass

from invoke.context import Context

from ..engines.compose import Compose
from ..engines.shell import run
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
        result = run(c, self.psql_argv(sql), hide=True, warn=True)
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

    def replace_argv(self) -> list[str]:
        """Replace the public schema with the archive on stdin, in one transaction (see
        :data:`RESTORE_SCRIPT`); unlike ``pg_restore --clean``, tables the archive does not
        have are dropped too."""
        return self.compose.argv("exec", "-T", "db", "sh", "-c", RESTORE_SCRIPT, "pg-restore",
                                 self.user, self.name)  # fmt: skip
