"""`invoke migrate-from-7x` against a real monolithic 7.x-style deployment.

The "before" is built here from the test application (see tests/e2e/legacy/): one
container running migrations, uWSGI and Celery from the bind-mounted tree, PostgreSQL 15
data in ../postgres_data, overrides in cms/local_settings.py, the key in .secret_key.
Users, a transcoded upload, dotfiles and a logged-in session are made through it; then
the migration runs and everything is checked in the new stack. Finally the old
deployment is shown untouched: its files hash the same and it starts again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import Stack, free_port, new_deployment, report_failure
from dotenv import dotenv_values
from legacy import OLD_ADMIN_PASSWORD, OLD_PG_MAJOR, OLD_SECRET_KEY, Legacy, create_legacy
from urllib3.util.retry import Retry

pytestmark = pytest.mark.e2e

ALICE_PASSWORD = "alice-Old-pw-1"


def tree_fingerprint(tree: Path) -> dict[str, str]:
    """sha256 of the files the migration reads (media, settings, key, compose file)."""
    paths = [tree / "cms/local_settings.py", tree / ".secret_key", tree / "docker-compose.yaml"]
    paths += [p for p in (tree / "media_files").rglob("*") if p.is_file()]
    return {str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def session_login(base: str, username: str, password: str) -> requests.Session:
    session = requests.Session()
    # the monolith's uWSGI HTTP router now and then drops a connection: retry those
    retry = Retry(total=3, connect=3, read=3, allowed_methods=None, backoff_factor=0.5)
    session.mount("http://", requests.adapters.HTTPAdapter(max_retries=retry))
    page = session.get(base + "/admin/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
    done = session.post(base + "/admin/login/?next=/admin/", timeout=10,
                        data={"csrfmiddlewaretoken": token, "username": username,
                              "password": password},
                        headers={"Referer": base + "/admin/login/"})  # fmt: skip
    assert "Site administration" in done.text, done.text[:500]
    return session


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory, new: Stack):
    root = tmp_path_factory.mktemp("legacy")
    # the site keeps its public address when it moves: the new stack's, here
    old = create_legacy(root, free_port(), f"legacy-{os.getpid()}", frontend_host=new.base)
    try:
        old.dc("up", "--detach")
        old.wait_healthy()
        yield old
    finally:
        old.dc("down", "--volumes", "--remove-orphans", check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def old_data(legacy: Legacy) -> dict:
    """Users, a transcoded upload, dotfiles and a live session, made in the old deployment."""
    legacy.shell(
        "from users.models import User; "
        f"User.objects.create_user('alice', 'alice@example.org', '{ALICE_PASSWORD}'); print(1)"
    )
    clip = legacy.dc("exec", "-T", "web", "sh", "-c",
                     "ffmpeg -loglevel error -f lavfi -i testsrc=duration=2:size=160x120:rate=25 "
                     "-c:v libx264 -movflags +faststart -f mp4 /tmp/c.mp4 && "
                     "base64 -w0 /tmp/c.mp4").stdout  # fmt: skip
    import base64

    video = base64.b64decode(clip)
    upload = requests.post(legacy.base + "/api/v1/media", auth=("alice", ALICE_PASSWORD),
                           data={"title": "legacy clip"},
                           files={"media_file": ("legacy clip.mp4", video, "video/mp4")},
                           timeout=60)  # fmt: skip
    assert upload.status_code == 201, upload.text
    media = upload.json()
    deadline = time.monotonic() + 180
    while (state := requests.get(f"{legacy.base}/api/v1/media/{media['id']}", timeout=10).json())[
        "encoding_status"
    ] not in ("success", "fail") or not state["thumbnail_url"]:
        assert time.monotonic() < deadline, state
        time.sleep(2)
    assert state["encoding_status"] == "success", state
    hidden = legacy.tree / "media_files/.operator/.keep"
    hidden.parent.mkdir(parents=True)
    hidden.write_text("dotfiles must survive\n")
    session = session_login(legacy.base, "admin", OLD_ADMIN_PASSWORD)
    # like real 7.x, the session is only in Redis: the migration must carry it there
    stored = "from django.contrib.sessions.models import Session; print(Session.objects.count())"
    assert legacy.shell(stored) == "0"
    hashes = legacy.shell(
        "from users.models import User; "
        "print(';'.join(f'{u.username}={u.password}' for u in User.objects.order_by('id')))"
    )
    legacy.dc("stop")
    # like many 7.x sites, the originals live on another disk, linked into media_files:
    # the migration must copy what the link leads to (and its check must see it)
    originals = legacy.tree / "media_files" / "original"
    disk2 = legacy.tree.parent / "disk2"
    disk2.mkdir()
    shutil.move(originals, disk2 / "original")
    originals.symlink_to(disk2 / "original")
    return {"media": state, "video": video, "session": session.cookies.get("sessionid"),
            "hashes": hashes, "fingerprint": tree_fingerprint(legacy.tree)}  # fmt: skip


@pytest.fixture(scope="module")
def new(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    home = tmp_path_factory.mktemp("migrated")
    deployment = new_deployment(home, f"mediacms-migrate-{os.getpid()}")
    try:
        yield deployment
    finally:
        if request.session.testsfailed:
            report_failure(deployment)
        deployment.dc("down", "--volumes", "--remove-orphans", check=False)


def test_doctor_before_the_move_says_not_deployed_and_names_the_migration(new: Stack):
    done = new.invoke("doctor")  # exit status 0: nothing deployed yet is not a failure
    line = next(x for x in done.stdout.splitlines() if " volumes " in x)
    assert line.startswith("INFO") and "not deployed" in line, done.stdout
    assert "invoke migrate-from-7x" in line


def test_dry_run_prints_the_plan_and_changes_nothing(legacy, old_data, new: Stack):
    done = new.invoke("migrate-from-7x", "--from", str(legacy.tree), "--dry-run")
    assert "sessions     Django's cached sessions in the old 'redis' service" in done.stdout
    assert f"PostgreSQL {OLD_PG_MAJOR}" in done.stdout
    assert re.search(r"media_files: \d+ files", done.stdout), done.stdout
    assert f"{new.settings.project}_media_files" in done.stdout
    assert "dropped    DATABASES" in done.stdout and "from .secret_key" in done.stdout
    volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter",
                              f"label=com.docker.compose.project={new.settings.project}"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert volumes.strip() == ""
    assert not (new.home / "custom/local_settings.py").exists()


def test_bad_input_is_refused_with_a_clear_error(legacy, old_data, new: Stack, tmp_path):
    nowhere = new.invoke("migrate-from-7x", "--from", str(tmp_path), check=False)
    assert nowhere.returncode != 0 and "is not a MediaCMS tree" in nowhere.stderr
    missing = new.invoke("migrate-from-7x", "--from", str(tmp_path / "no-such"), check=False)
    assert missing.returncode != 0 and "no-such does not exist" in missing.stderr
    junk = tmp_path / "junk.dump"
    junk.write_bytes(b"not a dump at all")
    refused = new.invoke("migrate-from-7x", "--from", str(legacy.tree), "--dump", str(junk),
                         check=False)  # fmt: skip
    assert refused.returncode != 0 and "neither a pg_dump archive" in refused.stderr


def test_migration_carries_everything_over(legacy, old_data, new: Stack):
    started = time.monotonic()
    done = new.invoke("migrate-from-7x", "--from", str(legacy.tree))
    print(f"\nmigrate-from-7x took {time.monotonic() - started:.1f} s", file=sys.stderr)
    assert "row counts match the old database" in done.stdout
    assert re.search(r"\d+ media files verified", done.stdout)
    assert int(re.search(r"(\d+) sessions carried over", done.stdout)[1]) >= 1, done.stdout

    # what it wrote holds password hashes and the old key: owner only
    backups = new.home / "backups"
    assert stat.S_IMODE(backups.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in backups.iterdir()}
    assert any(n.endswith(".dump") for n in modes) and set(modes.values()) == {0o600}, modes

    # logins with the old passwords, and a session made in the old deployment is still
    # valid: it was copied from the old Redis (the sessions' only store, as in 7.x) and
    # is signed with the old SECRET_KEY, which carried over
    session_login(new.base, "admin", OLD_ADMIN_PASSWORD)
    assert (
        'SESSION_ENGINE = "django.contrib.sessions.backends.cache"'
        in (new.home / "custom/local_settings.py").read_text()
    )
    carried = requests.Session()
    carried.cookies.set("sessionid", old_data["session"])
    assert "Site administration" in carried.get(new.url("/admin/"), timeout=10).text
    carried_env = dotenv_values(new.home / ".env")
    assert carried_env["SECRET_KEY"] == OLD_SECRET_KEY
    assert carried_env["FRONTEND_HOST"] == new.base
    hashes = new.dc("exec", "-T", "web", "python", "manage.py", "shell", "-c",
                    "from users.models import User; print(';'.join(f'{u.username}={u.password}'"
                    " for u in User.objects.order_by('id')))").stdout.strip().splitlines()[-1]  # fmt: skip
    assert hashes == old_data["hashes"]

    # media: byte-identical through nginx, uid 33, dotfiles included
    media = old_data["media"]
    state = requests.get(new.url(f"/api/v1/media/{media['id']}"), timeout=10).json()
    assert state["encoding_status"] == "success"
    original = requests.get(new.url(state["original_url"]), timeout=30)
    assert original.content == old_data["video"]
    for key in ("encoded_url", "thumbnail_url"):
        served = requests.get(new.url(state[key]), timeout=30).content
        assert (
            served
            == (legacy.tree / "media_files" / state[key].removeprefix("/media/")).read_bytes()
        )
    owners = new.dc("exec", "-T", "web", "sh", "-c",
                    "cd /home/mediacms.io/mediacms/media_files && "
                    "stat -c '%u:%g %n' .operator/.keep && find . ! -user 33 | wc -l && "
                    "find . -type l | wc -l").stdout  # fmt: skip
    assert owners.split() == ["33:33", ".operator/.keep", "0", "0"], owners  # and no links

    # settings: the operator's kept, the owned ones moved out
    custom = (new.home / "custom/local_settings.py").read_text()
    assert 'MEDIA_UPLOAD_NOTE = "kept by the migration"' in custom
    assert "\n# DATABASES = {" in custom and "\nDATABASES" not in custom
    portal = requests.get(new.url("/api/v1/config"), timeout=10).json()["portal_name"]
    assert portal == "Legacy Portal"


def test_a_plain_dump_with_a_meta_command_is_refused_before_anything_runs(
    legacy, old_data, new: Stack, tmp_path
):
    """The database step reads a plain-SQL dump first: psql never sees a \\! in it."""
    dump = tmp_path / "old.sql"
    dump.write_text("--\n-- PostgreSQL database dump\n--\n\nSET client_encoding = 'UTF8';\n"
                    "CREATE TABLE public.t (id integer);\n\\! touch /tmp/pwned\n")  # fmt: skip
    users = new.dc("exec", "-T", "web", "python", "manage.py", "shell", "-c",
                   "from users.models import User; print(User.objects.count())").stdout  # fmt: skip
    refused = new.invoke("migrate-from-7x", "--from", str(legacy.tree), "--dump", str(dump),
                         "--yes", check=False)  # fmt: skip
    assert refused.returncode != 0, refused.stdout
    assert 'old.sql, line 7: "\\! touch /tmp/pwned"' in refused.stderr, refused.stderr
    assert "stopping the old application" not in refused.stdout
    assert new.dc("exec", "-T", "db", "test", "-e", "/tmp/pwned", check=False).returncode == 1
    again = new.dc("exec", "-T", "web", "python", "manage.py", "shell", "-c",
                   "from users.models import User; print(User.objects.count())").stdout  # fmt: skip
    assert again == users


def test_a_second_run_is_refused_before_it_touches_anything(legacy, old_data, new: Stack):
    dry = new.invoke("migrate-from-7x", "--from", str(legacy.tree), "--dry-run")
    assert "would refuse: the new media volume is not empty" in dry.stdout, dry.stdout
    assert "would refuse: the new database already holds" in dry.stdout
    again = new.invoke("migrate-from-7x", "--from", str(legacy.tree), check=False)
    assert again.returncode != 0 and "pass --yes" in again.stderr, again.stderr[-2000:]
    assert "stopping the old application" not in again.stdout
    assert requests.get(new.url("/api/v1/health"), timeout=10).status_code == 200


def test_old_deployment_untouched_and_starts_again(legacy, old_data, new: Stack):
    assert tree_fingerprint(legacy.tree) == old_data["fingerprint"]
    legacy.dc("up", "--detach")
    legacy.wait_healthy()
    assert legacy.shell("from users.models import User; print(User.objects.count())") == "2"
    media = requests.get(f"{legacy.base}/api/v1/media/{old_data['media']['id']}", timeout=10)
    assert media.json()["title"] == "legacy clip"
    legacy.dc("stop")
