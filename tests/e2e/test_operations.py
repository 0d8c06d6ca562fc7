"""Operator tasks on the real stack: backups proven to restore, scaling, shells."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

MEDIA = "/home/mediacms.io/mediacms/media_files"


def django(stack, code: str) -> str:
    done = stack.invoke("admin-shell", "--django", "-c", code)
    return done.stdout.strip().splitlines()[-1]


def media_fingerprint(stack) -> str:
    """sha256, owner and path of every media file, dotfiles included."""
    script = f"cd {MEDIA} && find . -type f -printf '%U:%G %p\\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum"
    return stack.dc("exec", "-T", "web", "sh", "-c", script).stdout


def only(paths: list[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


def test_admin_shell_runs_one_command_non_interactively(stack):
    assert django(stack, "from users.models import User; print(User.objects.count())").isdigit()
    done = stack.invoke("admin-shell", "-c", "id -un")
    assert done.stdout.strip().splitlines()[-1] == "www-data"


def test_backup_db_writes_checksummed_archive_with_manifest(stack, tmp_path):
    done = stack.invoke("backup-db", "--dest", str(tmp_path), "--keep", "2")
    assert "exec -T db sh -c <" in done.stderr  # the command is printed, on one line
    assert "pg_export_snapshot" not in done.stderr  # its script only with --echo
    dump = only(sorted(tmp_path.glob("mediacms-db-*.dump")))
    assert dump.read_bytes()[:5] == b"PGDMP"
    digest, name = (dump.parent / (dump.name + ".sha256")).read_text().split()
    assert name == dump.name and digest == hashlib.sha256(dump.read_bytes()).hexdigest()
    manifest = json.loads((dump.parent / (dump.name + ".manifest.json")).read_text())
    assert manifest["row_counts"]["users_user"] >= 1
    assert any(m.startswith("users.0001") for m in manifest["migrations"])
    assert manifest["images"]["web"].startswith("sha256:")
    assert not list(tmp_path.glob(".*partial"))


def test_restore_db_refuses_corrupt_and_foreign_files_and_touches_nothing(stack, tmp_path):
    before = django(stack, "from users.models import User; print(User.objects.count())")
    stack.invoke("backup-db", "--dest", str(tmp_path))
    dump = only(sorted(tmp_path.glob("mediacms-db-*.dump")))
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    corrupt = stack.invoke("restore-db", str(dump), "--yes", check=False)
    assert corrupt.returncode != 0 and "fails its checksum" in corrupt.stderr
    foreign = tmp_path / "notes.dump"
    foreign.write_text("SELECT 1; -- not an archive\n")
    (tmp_path / "notes.dump.sha256").write_text(
        f"{hashlib.sha256(foreign.read_bytes()).hexdigest()}  notes.dump\n"
    )
    refused = stack.invoke("restore-db", str(foreign), "--yes", check=False)
    assert refused.returncode != 0 and "not a pg_dump custom-format archive" in refused.stderr
    assert django(stack, "from users.models import User; print(User.objects.count())") == before


def test_restore_db_needs_yes_over_existing_data(stack, tmp_path):
    stack.invoke("backup-db", "--dest", str(tmp_path))
    dump = only(sorted(tmp_path.glob("mediacms-db-*.dump")))
    done = stack.invoke("restore-db", str(dump), check=False)
    assert done.returncode != 0 and "--yes" in done.stderr


def test_failed_dump_leaves_no_file(stack, tmp_path):
    stack.dc("stop", "db")
    try:
        done = stack.invoke("backup-db", "--dest", str(tmp_path), check=False)
    finally:
        stack.dc("up", "--detach", "--wait", "db")
    assert done.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_full_backup_survives_destroyed_volumes(stack, tmp_path):
    code = (
        "from users.models import User; "
        "User.objects.filter(username='backup-probe').exists() or "
        "User.objects.create_user('backup-probe', password='probe-Pass-42'); print('ok')"
    )
    assert django(stack, code) == "ok"
    stack.dc("exec", "-T", "web", "sh", "-c", f"echo hidden > {MEDIA}/.dotfile-probe")
    users_before = django(
        stack,
        "from users.models import User; print(sorted(User.objects.values_list('username', 'password')))",
    )
    media_before = media_fingerprint(stack)

    stack.invoke("backup", "--dest", str(tmp_path))
    folder = only(sorted(tmp_path.glob("mediacms-*")))
    assert (folder / "manifest.json").is_file() and (folder / "env").stat().st_mode & 0o077 == 0

    stack.dc("down", "--volumes")
    stack.invoke("up")
    assert (
        django(
            stack,
            "from users.models import User; print(User.objects.filter(username='backup-probe').count())",
        )
        == "0"
    )

    stack.invoke("restore", str(folder), "--yes")
    users_after = django(
        stack,
        "from users.models import User; print(sorted(User.objects.values_list('username', 'password')))",
    )
    assert users_after == users_before
    assert media_fingerprint(stack) == media_before
    assert ".dotfile-probe" in media_before and "33:33" in media_before


def test_scale_short_workers_up_and_down(stack):
    stack.invoke("scale", "celery_short=3,celery_long=1")
    rows = [r for r in stack.compose.ps(_ctx()) if r["Service"] == "celery_short"]
    assert len(rows) == 3 and all(r["Health"] == "healthy" for r in rows), rows
    stack.invoke("scale", "celery_short=1")
    rows = [r for r in stack.compose.ps(_ctx()) if r["Service"] == "celery_short"]
    assert len(rows) == 1


def test_beat_cannot_be_scaled(stack):
    done = stack.invoke("scale", "celery_beat=2", check=False)
    assert done.returncode != 0 and "cannot be scaled" in done.stderr


def _ctx():
    from invoke import Context

    return Context()
