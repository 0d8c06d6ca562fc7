"""A dump that holds a psql meta-command runs nothing in the db container.

restore-db hands a custom-format archive to pg_restore, which sends its SQL to the
server (no psql reads it), as the db container's postgres user: an archive whose
definition carries ``\\! touch /tmp/pwned`` fails on the server, the database is as it
was and no file appears. A plain-SQL file is no archive and is refused before anything
runs. (migrate-from-7x's check of a plain dump: tests/e2e/test_migrate_from_7x.py.)
"""

from __future__ import annotations

import hashlib

import pytest

pytestmark = pytest.mark.e2e

PROBE = "COMMENT ON TABLE public.probe_meta IS '" + "A" * 40 + "';"
EVIL = b"SELECT 1;\n\\! touch /tmp/pwned\n--"


def psql(stack, sql: str) -> str:
    user, name = stack.settings.get("POSTGRES_USER"), stack.settings.get("POSTGRES_DB")
    return stack.dc("exec", "-T", "db", "psql", "-U", user, "-d", name, "-v", "ON_ERROR_STOP=1",
                    "-Atc", sql).stdout.strip()  # fmt: skip


def with_checksum(path, data: bytes):
    path.write_bytes(data)
    path.with_name(path.name + ".sha256").write_text(
        f"{hashlib.sha256(data).hexdigest()}  {path.name}\n"
    )
    return path


def pwned(stack) -> bool:
    return stack.dc("exec", "-T", "db", "test", "-e", "/tmp/pwned", check=False).returncode == 0


def test_a_dump_with_a_meta_command_runs_nothing_and_changes_nothing(stack, tmp_path):
    user, name = stack.settings.get("POSTGRES_USER"), stack.settings.get("POSTGRES_DB")
    psql(stack, f"CREATE TABLE public.probe_meta (id integer); {PROBE}")
    try:
        archive = stack.dc("exec", "-T", "db", "pg_dump", "-U", user, "-d", name,
                           "--format=custom", "--compress=0", "--no-owner", "--no-privileges",
                           text=False).stdout  # fmt: skip
    finally:
        psql(stack, "DROP TABLE public.probe_meta")
    # the comment's text, same length, becomes a line psql would run as a shell command
    assert PROBE.encode() in archive
    evil = with_checksum(tmp_path / "evil.dump",
                         archive.replace(PROBE.encode(), EVIL.ljust(len(PROBE), b"-")))  # fmt: skip
    before = psql(stack, "SELECT count(*) FROM users_user") + psql(stack, "TABLE django_migrations")

    done = stack.invoke("restore-db", str(evil), "--yes", check=False)
    assert done.returncode == 1 and "as it was" in done.stderr, done.stdout + done.stderr
    assert 'syntax error at or near "\\"' in done.stderr
    assert not pwned(stack)
    after = psql(stack, "SELECT count(*) FROM users_user") + psql(stack, "TABLE django_migrations")
    assert after == before
    assert psql(stack, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'mediacms%'") == "0"

    plain = with_checksum(tmp_path / "evil.sql",
                          b"--\n-- PostgreSQL database dump\n--\n\\! touch /tmp/pwned\n")  # fmt: skip
    refused = stack.invoke("restore-db", str(plain), "--yes", check=False)
    assert refused.returncode == 1 and "not a pg_dump custom-format archive" in refused.stderr
    assert not pwned(stack)
    ps = stack.dc("ps", "--format", "{{.Service}} {{.Health}}").stdout
    assert "web healthy" in ps, ps
