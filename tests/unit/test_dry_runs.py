"""Dry runs write nothing anywhere and need no engine; engine problems are said plainly.

The tasks run as a user would run them (``python -m invoke``), with DOCKER_HOST pointing
at a socket nobody listens on, against a deployment folder and a backup made here.
"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest
from invoke import Context, MockContext, Result

from mediacms_stack.data import artifacts
from mediacms_stack.engines import engine, shell
from mediacms_stack.stack import config
from mediacms_stack.stack.errors import StackError

REPO = config.ROOT


def snapshot(root):
    """Every path under ``root`` with its mode, size, mtime and content hash."""
    seen = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        seen[str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime_ns, digest)
    return seen


def _archive(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    artifacts.write_checksum(path)


@pytest.fixture
def deployment(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "docker-compose.yaml", home)
    (home / "custom").mkdir()
    (home / "custom" / "site.css").write_text("live")
    config.init(home, {"COMPOSE_PROJECT_NAME": "dry", "MEDIACMS_VERSION": "2.0"},
                example=REPO / config.EXAMPLE_FILE)  # fmt: skip
    folder = home / "backups" / "mediacms-20260101T000000Z"
    folder.mkdir(parents=True)
    (folder / "db.dump").write_bytes(b"PGDMP\x01data")
    artifacts.write_checksum(folder / "db.dump")
    _archive(folder / "media.tar.gz", {"original/a.mp4": b"video"})
    _archive(folder / "custom.tar.gz", {"site.css": b"from the backup"})
    manifest = {"database": "db.dump", "media": "media.tar.gz", "custom": "custom.tar.gz",
                "mediacms_version": "1.0", "images": {"web": ["mediacms/mediacms:1.0", "sha256:1"]}}  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return home, folder


def invoke(home, *args):
    """The task as a user runs it, with no engine and no compose plugin (an empty
    DOCKER_CONFIG: whatever an earlier run installed in ~/.docker stays out of reach)."""
    config_dir = home.parent / "docker-config"
    config_dir.mkdir(exist_ok=True)
    env = {**os.environ, "MEDIACMS_HOME": str(home), "DOCKER_HOST": f"unix://{home}/no.sock",
           "DOCKER_CONFIG": str(config_dir)}  # fmt: skip
    env.pop("MEDIACMS_ENV_FILE", None)
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), *args],
                          env=env, capture_output=True, text=True, check=False, timeout=120)  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [("restore", "{folder}", "--yes", "--dry-run"), ("upgrade", "--rollback", "{folder}", "-n"),
     ("restore-media", "{folder}/media.tar.gz", "-y", "-n"),
     ("restore-db", "{folder}/db.dump", "-y", "-n"), ("backup", "--dry-run")],
    ids=lambda a: " ".join(a[:2]),
)  # fmt: skip
def test_dry_runs_write_nothing_and_need_no_engine(deployment, args):
    home, folder = deployment
    before = snapshot(home)
    done = invoke(home, *(a.format(folder=folder) for a in args))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "dry run" in done.stdout + done.stderr
    assert snapshot(home) == before  # .env, custom/, backups: not one byte, not one mtime


def test_restore_dry_run_says_what_it_would_do(deployment):
    home, folder = deployment
    done = invoke(home, "restore", str(folder), "--yes", "--dry-run")
    assert "verified" in done.stdout and "nothing was changed" in done.stdout
    assert (home / "custom" / "site.css").read_text() == "live"


def test_dry_run_still_refuses_a_bad_backup(deployment):
    home, folder = deployment
    (folder / "media.tar.gz").write_bytes(b"\x1f\x8b broken")
    done = invoke(home, "restore", str(folder), "--yes", "--dry-run")
    assert done.returncode == 1 and "fails its checksum" in done.stderr
    assert "Traceback" not in done.stderr


def test_up_dry_run_without_an_engine_prints_the_plan(deployment):
    home, _ = deployment
    done = invoke(home, "up", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "no Docker engine answers" in done.stdout
    assert "docker compose --file docker-compose.yaml up --detach --wait" in done.stderr


def test_up_refuses_a_number_that_is_not_one_in_one_line(deployment):
    home, _ = deployment
    config.update(config.load(home), {"UPLOAD_DISK_RESERVE_MB": "2G"})
    before = snapshot(home)
    done = invoke(home, "up", "--dry-run")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "numbers: UPLOAD_DISK_RESERVE_MB='2G' (a whole number from 0 to" in done.stderr
    assert "docker compose" not in done.stdout + done.stderr
    assert snapshot(home) == before


def test_permission_denied_is_said_and_nothing_is_installed(monkeypatch):
    import docker
    import docker.errors

    def refused(**kwargs):
        raise docker.errors.DockerException(
            "Error while fetching server API version: ('Connection aborted.', "
            "PermissionError(13, 'Permission denied'))"
        )

    monkeypatch.setattr(docker, "from_env", refused)
    monkeypatch.setattr(engine, "install_engine_package", lambda c: pytest.fail("installed"))
    monkeypatch.setattr(engine, "start_dockerd", lambda c: pytest.fail("started dockerd"))
    with pytest.raises(StackError, match=r"permission denied.*usermod -aG docker"):
        engine.ensure(Context())


def test_a_dry_run_of_the_engine_start_prints_it_and_waits_for_nothing(capsys):
    c = Context()
    shell.set_dry(c, True)
    engine.start_dockerd(c, wait_seconds=0)
    line = capsys.readouterr().err
    assert "setsid" in line and "dockerd" in line and str(engine.DOCKERD_LOG) in line


@pytest.mark.parametrize("said, version", [("2.40.3", "2.40.3"), ("v2.24.6", "v2.24.6"),
                                           ("5.0.0", "5.0.0"), ("1.29.2", None), ("", None)])  # fmt: skip
def test_compose_v2_and_later_count_as_compose(said, version):
    c = MockContext(run=Result(said + "\n", exited=0 if said else 1))
    assert engine.compose_version(c) == version
