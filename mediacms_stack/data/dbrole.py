"""MediaCMS's own database role: not a superuser, owner of its database.

A fresh stack gets two roles: ``POSTGRES_SUPERUSER`` (``postgres``), which the db image
creates to initialise the cluster and nothing else uses, and ``POSTGRES_USER``, which
the compose file's init script creates as a plain login role owning ``POSTGRES_DB``.
Stacks made before this split have one role, ``POSTGRES_USER``, a superuser (the
cluster's bootstrap role, which PostgreSQL does not let go of that attribute).
``invoke upgrade`` separates them with :func:`separate`: a new plain role
``<POSTGRES_USER>_app`` takes over the database and everything in its public schema,
and .env names the old role as the superuser and the new one as MediaCMS's.
"""

from __future__ import annotations

import io
import re
import secrets

from invoke.context import Context

from ..engines.compose import Compose
from ..engines.shell import run, say
from ..stack.config import Settings
from ..stack.errors import StackError

_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: Run as the superuser, in one transaction: the plain role takes over the database, its
#: public schema and every relation in it (tables carry their own sequences along). The
#: site may be serving meanwhile: a table its queries hold for over 5 s ends the split,
#: changing nothing, instead of stalling every query behind it.
SEPARATE_SQL = """\
SET LOCAL lock_timeout = '5s';
SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = '{app}') AS present \\gset
\\if :present
ALTER ROLE "{app}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD '{password}';
\\else
CREATE ROLE "{app}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD '{password}';
\\endif
ALTER DATABASE "{database}" OWNER TO "{app}";
ALTER SCHEMA public OWNER TO "{app}";
DO $move$
DECLARE
  item record;
BEGIN
  FOR item IN
    SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'f', 'v', 'm')
  LOOP
    EXECUTE format('ALTER %s %s OWNER TO %I',
      CASE item.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                        WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
      item.name, '{app}');
  END LOOP;
  FOR item IN
    SELECT c.oid::regclass AS name FROM pg_class c
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S'
      AND c.relowner <> '{app}'::regrole
  LOOP
    EXECUTE format('ALTER SEQUENCE %s OWNER TO %I', item.name, '{app}');
  END LOOP;
END
$move$;
SELECT count(*) > 0 AS left_over FROM pg_class
WHERE relnamespace = 'public'::regnamespace AND relowner <> '{app}'::regrole \\gset
\\if :left_over
DO $fail$ BEGIN RAISE EXCEPTION 'objects in public still owned by another role'; END $fail$;
\\endif
"""


def is_separate(settings: Settings) -> bool:
    """True when .env already names a superuser apart from MediaCMS's role."""
    return bool(settings.get("POSTGRES_SUPERUSER"))


def separate(c: Context, compose: Compose, settings: Settings) -> dict[str, str]:
    """Give a stack of the single-role layout its plain MediaCMS role (db running); returns
    the .env changes that name the roles ({} when there is nothing to do, or in a dry run).

    The database changes in one transaction; the caller hands the changes to
    :func:`config.update` only after it. Until .env is written the old role still works,
    as a superuser, so a failure in between leaves a working stack.
    """
    if is_separate(settings):
        return {}
    superuser = settings.get("POSTGRES_USER", "mediacms")
    database = settings.get("POSTGRES_DB", "mediacms")
    app = f"{superuser}_app"
    for name in (superuser, database, app):
        if not _ROLE.fullmatch(name):
            raise StackError(f"{name!r}: role and database names must be lower-case letters, "
                             "digits and '_' for the automatic role split")  # fmt: skip
    password = secrets.token_urlsafe(24)
    sql = SEPARATE_SQL.format(app=app, password=password, database=database)
    argv = compose.argv("exec", "-T", "db", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                        "--single-transaction", "-U", superuser, "-d", database)  # fmt: skip
    say(f"MediaCMS gets its own role {app!r} (not a superuser, owner of {database!r}); "
        f"{superuser!r} stays the superuser")  # fmt: skip
    # the password travels on stdin, never in argv or the printed command
    done = run(c, argv, in_stream=io.StringIO(sql), hide=True, warn=True)
    if done is None:  # a dry run
        return {}
    if not done.ok:
        raise StackError(f"separating the database role failed, nothing changed: "
                         f"{done.stderr.strip()[-800:]}")  # fmt: skip
    say(f"{settings.env_file}: POSTGRES_USER={app}, POSTGRES_SUPERUSER={superuser}")
    return {
        "POSTGRES_SUPERUSER": superuser,
        "POSTGRES_SUPERUSER_PASSWORD": settings.get("POSTGRES_PASSWORD"),
        "POSTGRES_USER": app,
        "POSTGRES_PASSWORD": password,
    }
