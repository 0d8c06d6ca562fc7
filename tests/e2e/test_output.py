"""What an operator reads: one line per command, whole commands on request, and `up`
ending with where MediaCMS answers and how to log in."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_up_ends_with_the_url_and_the_admin_login(stack):
    done = stack.invoke("up")
    last = done.stdout.strip().splitlines()[-3:]
    assert last[0] == f"MediaCMS is up: {stack.settings.get('FRONTEND_HOST')}"
    assert last[1].startswith("admin user: admin; password: ADMIN_PASSWORD in ")
    assert "invoke set-admin-password --user admin" in last[2]


def test_commands_are_one_line_each_unless_echo_is_asked(stack, tmp_path):
    quiet = stack.invoke("backup-db", "--dest", str(tmp_path / "quiet"))
    shown = [line for line in quiet.stderr.splitlines() if line.startswith("$ ")]
    assert shown and all("--project-directory" not in line for line in shown)
    assert "pg_export_snapshot" not in quiet.stderr
    verbose = stack.invoke("--echo", "backup-db", "--dest", str(tmp_path / "verbose"))
    assert "pg_dump --snapshot" in verbose.stderr and "--project-directory" in verbose.stderr
