"""backup-db on a site in use: the manifest's row counts are those of the dump itself.

A writer commits one row at a time into django_session while `invoke backup-db` runs;
`invoke restore-db` then compares the restored tables with the manifest and fails on any
difference, which is what happened when the counts were taken apart from the dump.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

pytestmark = pytest.mark.e2e

WRITER = """
DO $$
BEGIN
  FOR i IN 1..{rows} LOOP
    INSERT INTO django_session VALUES ('live-probe-' || i, 'x', now() + interval '1 day');
    COMMIT;
    PERFORM pg_sleep(0.004);
  END LOOP;
END $$;
"""


def psql(stack, *args: str) -> list[str]:
    user = stack.settings.get("POSTGRES_USER", "mediacms")
    db = stack.settings.get("POSTGRES_DB", "mediacms")
    done = stack.dc("exec", "-T", "db", "psql", "-U", user, "-d", db, "-v", "ON_ERROR_STOP=1",
                    "-At", *args)  # fmt: skip
    return done.stdout.split()


def probes(stack) -> int:
    return int(psql(stack, "-c", "SELECT count(*) FROM django_session "
                                 "WHERE session_key LIKE 'live-probe-%'")[0])  # fmt: skip


def test_counts_in_the_manifest_match_the_dump_while_rows_are_written(stack, tmp_path):
    user = stack.settings.get("POSTGRES_USER", "mediacms")
    db = stack.settings.get("POSTGRES_DB", "mediacms")
    writer = subprocess.Popen(stack.compose.argv("exec", "-T", "db", "psql", "-U", user, "-d", db,
                                                 "-v", "ON_ERROR_STOP=1", "-q", "-c",
                                                 WRITER.format(rows=2500)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while probes(stack) < 50:
            assert time.monotonic() < deadline and writer.poll() is None, writer.communicate()
            time.sleep(0.2)
        started_at = probes(stack)
        stack.invoke("backup-db", "--dest", str(tmp_path))
        stopped_at = probes(stack)
        assert writer.poll() is None, "the writer must still be writing after the backup"
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0, writer.stderr.read()

    [dump] = sorted(tmp_path.glob("mediacms-db-*.dump"))
    manifest = json.loads((tmp_path / (dump.name + ".manifest.json")).read_text())
    assert probes(stack) == 2500 and started_at < stopped_at  # rows arrived during the backup

    restored = stack.invoke("restore-db", str(dump), "--yes")  # checks every count
    assert "row counts match the manifest" in restored.stdout
    in_dump = probes(stack)
    assert started_at <= in_dump <= stopped_at < 2500
    sessions = int(psql(stack, "-c", "SELECT count(*) FROM django_session")[0])
    assert manifest["row_counts"]["django_session"] == sessions
    psql(stack, "-c", "DELETE FROM django_session WHERE session_key LIKE 'live-probe-%'")
