import hashlib
import json
import re

import pytest
from invoke import MockContext, Result

from mediacms_stack import backup, config
from mediacms_stack.compose import Compose
from mediacms_stack.shell import StackError

COUNTS = "users_user\t2\nfiles_media\t5\n"


def mock(dump_ok=True):
    return MockContext(
        run={
            re.compile(r".*psql.*information_schema.*"): Result(COUNTS),
            re.compile(r".*psql.*django_migrations.*"): Result("users.0001_initial\n"),
            re.compile(r".*ps --format json.*"): Result(""),
            re.compile(r".*pg_dump.*"): Result(
                exited=0 if dump_ok else 1,
                stderr="" if dump_ok else "pg_dump: error: connection refused",
            ),
        },
        repeat=True,
    )


def test_backup_db_streams_to_temp_name_then_renames(tmp_path, monkeypatch):
    settings = config.Settings(tmp_path, {"MEDIACMS_VERSION": "8.3.2"})
    calls = []

    def fake_run(c, argv, stdout_to=None, **kw):
        calls.append((argv, stdout_to))
        with open(stdout_to, "wb") as handle:
            handle.write(b"PGDMP-fake")
        return Result(exited=0)

    monkeypatch.setattr("mediacms_stack.shell.run", fake_run)
    dump = backup.backup_db(mock(), Compose(tmp_path), settings, tmp_path / "b")
    argv, target = calls[0]
    assert target.endswith(".partial") and "--format=custom" in argv
    assert dump.read_bytes() == b"PGDMP-fake" and not list((tmp_path / "b").glob(".*"))
    manifest = json.loads((dump.parent / (dump.name + ".manifest.json")).read_text())
    assert manifest["row_counts"] == {"users_user": 2, "files_media": 5}
    assert manifest["migrations"] == ["users.0001_initial"]


def test_failed_dump_leaves_nothing_and_reports_pg_dump(tmp_path):
    settings = config.Settings(tmp_path, {})
    with pytest.raises(StackError, match="connection refused"):
        backup.backup_db(mock(dump_ok=False), Compose(tmp_path), settings, tmp_path / "b")
    assert list((tmp_path / "b").iterdir()) == []


def test_retention_keeps_newest(tmp_path):
    for stamp in ("20260101T000000Z", "20260102T000000Z", "20260103T000000Z"):
        (tmp_path / f"mediacms-db-{stamp}.dump").write_bytes(b"PGDMP")
        (tmp_path / f"mediacms-db-{stamp}.dump.sha256").write_text("x")
    backup.prune(tmp_path, "mediacms-db-*.dump", 2)
    assert sorted(p.name for p in tmp_path.glob("*.dump")) == [
        "mediacms-db-20260102T000000Z.dump",
        "mediacms-db-20260103T000000Z.dump",
    ]
    assert not (tmp_path / "mediacms-db-20260101T000000Z.dump.sha256").exists()


def test_check_dump_file_refuses_foreign_and_corrupt(tmp_path):
    foreign = tmp_path / "x.dump"
    foreign.write_text("hello")
    with pytest.raises(StackError, match="not a pg_dump"):
        backup.check_dump_file(foreign)
    good = tmp_path / "g.dump"
    good.write_bytes(b"PGDMP\x01\x02")
    with pytest.raises(StackError, match=r"no g\.dump\.sha256"):
        backup.check_dump_file(good)
    (tmp_path / "g.dump.sha256").write_text(hashlib.sha256(b"other").hexdigest() + "  g.dump\n")
    with pytest.raises(StackError, match="fails its checksum"):
        backup.check_dump_file(good)
    backup.write_checksum(good)
    backup.check_dump_file(good)


def test_restore_refuses_before_touching_anything(tmp_path):
    bad = tmp_path / "bad.dump"
    bad.write_text("not a dump")
    c = MockContext()  # any command would fail the test
    with pytest.raises(StackError):
        backup.restore_db(
            c, Compose(tmp_path), config.Settings(tmp_path, {}), bad, yes=True, safety_dir=tmp_path
        )
