"""A PostgreSQL cluster copied to a newer major, and the copy checked.

Each cluster runs in a one-off container of the stack's db service (``docker compose
run``; its image and volume given through POSTGRES_IMAGE and POSTGRES_VOLUME in compose's
environment), so both get the service's limits, capabilities and `data` network, and
compose creates and labels the new volume as its own. The new one starts with its
superuser alone; the roles come from the old one (``pg_dumpall --roles-only``: attributes,
memberships and password hashes), then each database whole (``pg_dump | pg_restore
--create``: owner, encoding, locale, privileges, extensions and rows), read by the old
major's own tools and loaded by the new major's.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass

from invoke.context import Context

from ..engines.compose import Compose
from ..engines.shell import run
from ..stack.errors import StackError
from . import plainsql
from .database import Database, compare_counts

#: Where the maintenance connections go: every cluster has it, no data of ours is in it.
MAINTENANCE_DB = "postgres"
#: The databases that are copied: every one but the templates and the maintenance one.
DATABASES_SQL = ("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                 "AND datname <> 'postgres' ORDER BY 1")  # fmt: skip
ROLES_SQL = "SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1"
EXTENSIONS_SQL = "SELECT extname FROM pg_extension ORDER BY 1"
#: The role initdb made (the bootstrap superuser): the new cluster's one role at first.
BOOTSTRAP_SQL = "SELECT rolname FROM pg_roles WHERE oid = 10"
#: Every database's collation version recorded as the one the C library now gives.
REFRESH_SQL = ("SELECT format('ALTER DATABASE %I REFRESH COLLATION VERSION', datname) "
               "FROM pg_database WHERE datallowconn \\gexec")  # fmt: skip
STALE_COLLATIONS_SQL = ("SELECT datname FROM pg_database WHERE datallowconn AND "
                        "datcollversion IS DISTINCT FROM "
                        "pg_database_collation_actual_version(oid) ORDER BY 1")  # fmt: skip
#: Log in over the network with a password read from stdin (never in argv):
#: ``sh -c LOGIN_SCRIPT login HOST ROLE DATABASE``; prints the role it logged in as.
LOGIN_SCRIPT = ('IFS= read -r PGPASSWORD && export PGPASSWORD && exec psql -X -At -h "$1" '
                '-U "$2" -d "$3" -c "SELECT current_user"')  # fmt: skip

_VERSION = re.compile(r"\(PostgreSQL\) (\d+)")
#: An image reference (name, optional tag or digest): never an option to docker run.
_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")


def image_major(c: Context, image: str) -> str:
    """The PostgreSQL major an image runs (``postgres --version``); StackError when the
    engine does not have the image (nothing is pulled here)."""
    if not _REFERENCE.fullmatch(image):
        raise StackError(f"{image!r} is not an image reference (e.g. postgres:17)")
    argv = ["docker", "run", "--rm", "--pull", "never", "--network", "none",
            "--entrypoint", "postgres", image, "--version"]  # fmt: skip
    done = run(c, argv, query=True, hide=True, warn=True, in_stream=False)
    found = _VERSION.search(done.stdout) if done.ok else None
    if found is None:
        raise StackError(f"cannot run PostgreSQL from image {image}: "
                         f"{(done.stderr or done.stdout).strip()[-300:]}")  # fmt: skip
    return found[1]


def data_major(c: Context, image: str, volume: str) -> str:
    """The major of the cluster in engine volume ``volume`` (its PG_VERSION), read through a
    throwaway container of ``image`` with the volume mounted read-only."""
    argv = ["docker", "run", "--rm", "--pull", "never", "--network", "none", "--volume",
            f"{volume}:/cluster:ro", "--entrypoint", "cat", image, "/cluster/PG_VERSION"]  # fmt: skip
    done = run(c, argv, query=True, hide=True, warn=True, in_stream=False)
    if not done.ok or not done.stdout.strip().isdigit():
        raise StackError(f"volume {volume} holds no PostgreSQL cluster (no PG_VERSION): "
                         f"{done.stderr.strip()[-300:]}")  # fmt: skip
    return done.stdout.strip()


@dataclass(frozen=True)
class Cluster:
    """A cluster in a one-off container ``container`` of the db service, on ``image`` with
    the stack's volume ``volume`` (POSTGRES_VOLUME: without the project prefix)."""

    compose: Compose
    image: str
    volume: str
    container: str
    superuser: str

    def db(self, name: str = MAINTENANCE_DB) -> Database:
        return Database(self.compose, self.superuser, name, container=self.container)

    def start(self, c: Context, *, new: bool) -> None:
        """Run it (detached, removed when stopped) and wait until it accepts connections.
        ``new``: the volume is created empty and the image's first start makes a cluster
        with only the superuser (its password from .env, as for a new stack)."""
        alone = ["-e", f"POSTGRES_DB={MAINTENANCE_DB}", "-e", f"MEDIACMS_DB_USER={self.superuser}"]
        argv = self.compose.argv("run", "--detach", "--rm", "--no-deps", "--name", self.container,
                                 *(alone if new else []), "db")  # fmt: skip
        done = run(c, argv, env={"POSTGRES_IMAGE": self.image, "POSTGRES_VOLUME": self.volume},
                   hide=True, warn=True, in_stream=False)  # fmt: skip
        if not done.ok:
            raise StackError(f"starting {self.image} on volume {self.volume} failed: "
                             f"{done.stderr.strip()[-500:]}")  # fmt: skip
        self.db().wait_ready(c, timeout=120, what=f"PostgreSQL in {self.container}")

    def stop(self, c: Context) -> None:
        """Stop it (a fast shutdown; the container goes with it). Gone already: nothing."""
        run(c, ["docker", "stop", self.container], hide=True, warn=True, in_stream=False)

    def query(self, c: Context, sql: str, database: str = MAINTENANCE_DB) -> list[str]:
        return [row[0] for row in self.db(database).query(c, sql)]

    def psql(self, c: Context, sql: str, *, what: str) -> None:
        """Run ``sql`` (on stdin: it may hold password hashes) as the superuser."""
        argv = self.db().exec_argv("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U",
                                   self.superuser, "-d", MAINTENANCE_DB)  # fmt: skip
        done = run(c, argv, in_stream=io.StringIO(sql), hide=True, warn=True)
        if not done.ok:
            raise StackError(f"{what} failed: {done.stderr.strip()[-800:]}")


def copy_roles(c: Context, old: Cluster, new: Cluster) -> None:
    """Every role of the old cluster, its attributes, memberships and password hash, into the
    new one (which has the superuser already: its CREATE is left out), in one transaction.
    The SQL is read first: a psql meta-command in it is refused (:mod:`plainsql`)."""
    dumped = run(c, old.db().exec_argv("pg_dumpall", "--roles-only", "-U", old.superuser),
                 hide=True, warn=True, in_stream=False)  # fmt: skip
    if not dumped.ok:
        raise StackError(f"pg_dumpall --roles-only failed: {dumped.stderr.strip()[-800:]}")
    exists = {f"CREATE ROLE {new.superuser};", f'CREATE ROLE "{new.superuser}";'}
    sql = "\n".join(line for line in dumped.stdout.splitlines() if line not in exists)
    bad = plainsql.meta_command(line.encode() for line in sql.splitlines())
    if bad is not None:
        raise StackError(f"the old cluster's roles hold a psql meta-command, line {bad[0]}: "
                         f"{bad[1]!r}; nothing was loaded")  # fmt: skip
    new.psql(c, f"BEGIN;\n{sql}\nCOMMIT;\n", what="loading the roles")


def copy_database(c: Context, old: Cluster, new: Cluster, name: str) -> None:
    """One database, whole (``pg_restore --create``: created as it was, then filled)."""
    dump = old.db(name).exec_argv("pg_dump", "-U", old.superuser, "-d", name, "--format=custom")
    load = new.db().exec_argv("pg_restore", "-U", new.superuser, "-d", MAINTENANCE_DB,
                              "--create", "--exit-on-error")  # fmt: skip
    done = run(c, load, pipe_from=dump, hide=True, warn=True, in_stream=False)
    if not done.ok:
        raise StackError(f"copying database {name} failed: {done.stderr.strip()[-800:]}")


def refresh_and_analyze(c: Context, new: Cluster) -> None:
    """Collation versions recorded afresh (``ALTER DATABASE ... REFRESH COLLATION VERSION``,
    every database) and statistics rebuilt (``vacuumdb --all --analyze-in-stages``)."""
    new.psql(c, REFRESH_SQL + "\n", what="refreshing the collation versions")
    argv = new.db().exec_argv("vacuumdb", "--all", "--analyze-in-stages", "-U", new.superuser)
    done = run(c, argv, hide=True, warn=True, in_stream=False)
    if not done.ok:
        raise StackError(f"vacuumdb --analyze-in-stages failed: {done.stderr.strip()[-800:]}")


def login(c: Context, client: Cluster, server: Cluster, role: str, password: str,
          database: str) -> None:  # fmt: skip
    """``role`` logs in to ``server`` with ``password``, from ``client``'s container over
    the network (a password is asked: no loopback or socket rule applies)."""
    argv = client.db().exec_argv("sh", "-c", LOGIN_SCRIPT, "login", server.container, role,
                                 database)  # fmt: skip
    done = run(c, argv, in_stream=io.StringIO(password + "\n"), hide=True, warn=True)
    if not done.ok or done.stdout.strip() != role:
        raise StackError(f"role {role} cannot log in to the new cluster with its password from "
                         f".env: {done.stderr.strip()[-300:]}")  # fmt: skip


def verify(c: Context, old: Cluster, new: Cluster, databases: list[str],
           counts: Mapping[str, Mapping[str, int]]) -> list[str]:  # fmt: skip
    """The new cluster against the old one: the same roles, and in each database the same
    extensions and exactly the same rows per table; no collation version left stale.
    Returns what was checked, a line each."""
    roles = old.query(c, ROLES_SQL)
    if new.query(c, ROLES_SQL) != roles:
        raise StackError(f"roles differ: old {roles}, new {new.query(c, ROLES_SQL)}")
    lines = [f"roles: {', '.join(roles)}"]
    for name in databases:
        extensions = old.query(c, EXTENSIONS_SQL, name)
        if new.query(c, EXTENSIONS_SQL, name) != extensions:
            raise StackError(f"extensions of {name} differ: old {extensions}, "
                             f"new {new.query(c, EXTENSIONS_SQL, name)}")  # fmt: skip
        after = new.db(name).row_counts(c)
        compare_counts(counts[name], after, "in the old cluster", "in the new one",
                       f"row counts of database {name} differ")  # fmt: skip
        if set(after) != set(counts[name]):
            raise StackError(f"tables of {name} differ: {sorted(set(after) ^ set(counts[name]))}")
        lines.append(f"database {name}: {len(after)} tables, {sum(after.values())} rows, "
                     f"the same counts per table; extensions {', '.join(extensions)}")  # fmt: skip
    stale = new.query(c, STALE_COLLATIONS_SQL)
    if stale:
        raise StackError(f"collation versions still differ from the C library's in: {stale}")
    lines.append("collation versions: every database's matches the C library's")
    return lines
