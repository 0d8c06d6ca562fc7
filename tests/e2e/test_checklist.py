"""The seed's "Testing Checklist", run for real against the production stack.

Tests run in file order and build on each other (upload before persistence), like an
operator walking the list.
"""

from __future__ import annotations

import http.client
import re
import secrets
import subprocess
import time

import pytest
import requests
from conftest import access_log
from invoke import Context

from mediacms_stack.stack.model import SERVICES
from tests.uploads import post_patiently
from tests.uwsgi_workers import replace_every_worker

pytestmark = pytest.mark.e2e


def service_states(stack) -> dict[str, list[tuple[str, str]]]:
    states: dict[str, list[tuple[str, str]]] = {}
    for row in stack.compose.ps(Context()):
        states.setdefault(row["Service"], []).append((row["State"], row.get("Health", "")))
    return states


def test_every_service_healthy(stack):
    states = service_states(stack)
    for service in SERVICES:
        assert service in states, f"{service} missing from compose ps: {states}"
        assert all(s == ("running", "healthy") for s in states[service]), (service, states[service])


def test_migrations_ran_once_and_succeeded(stack):
    ps = stack.dc("ps", "--all", "--format", "{{.Service}} {{.State}} {{.ExitCode}}").stdout
    assert re.search(r"^migrations exited 0$", ps, re.M), ps
    logs = stack.dc("logs", "migrations").stdout
    # the stack is the session's: modules before this one may have run `up` again (a new
    # migrations container, or the same one started again): the first run made the admin
    # from ADMIN_PASSWORD, every later one found the database and left it as it was
    runs = logs.count("migrations: done")
    made = logs.count("created admin 'admin' with the password from ADMIN_PASSWORD")
    kept = logs.count("migrations: existing database, fixtures and admin left as they are")
    assert runs >= 1 and made <= 1 and made + kept == runs, logs
    assert "generated password" not in logs
    check = ("from django.contrib.auth import get_user_model; "
             "u = get_user_model().objects.get(username='admin'); "
             f"print('admin', u.is_superuser, u.check_password({stack.admin_password!r}))")  # fmt: skip
    said = stack.dc("exec", "-T", "web", "python", "manage.py", "shell", "-c", check).stdout
    assert "admin True True" in said, said
    plan = stack.dc("exec", "-T", "web", "python", "manage.py", "showmigrations", "--plan").stdout
    assert "[X]" in plan and "[ ]" not in plan


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def test_migrations_wait_for_a_late_database_then_run(stack):
    """Started before its database answers (as on Swarm, which has no depends_on), the job
    waits for it and then runs; one that never answers ends it non-zero, saying why."""
    late = f"mcms-late-db-{secrets.token_hex(4)}"
    job = f"{late}-job"
    db = stack.dc("ps", "-q", "db").stdout.strip()
    docker("network", "create", "--internal", late)
    try:
        stack.dc("run", "--detach", "--no-deps", "--name", job, "-e", f"POSTGRES_HOST={late}",
                 "-e", "DATABASE_WAIT_SECONDS=120", "migrations")  # fmt: skip
        docker("network", "connect", late, job)
        deadline = time.monotonic() + 60
        while "waiting for the database" not in docker("logs", job).stdout:
            assert time.monotonic() < deadline, docker("logs", job).stdout
            time.sleep(1)
        docker("network", "connect", "--alias", late, late, db)
        status = docker("wait", job).stdout.strip()
        logs = docker("logs", job).stdout
        assert status == "0", logs
        assert logs.count("waiting for the database") == 1, logs
        assert "existing database, fixtures and admin left as they are" in logs, logs
        assert logs.rstrip().endswith("migrations: done"), logs
    finally:
        docker("rm", "--force", job, check=False)
        docker("network", "disconnect", "--force", late, db, check=False)
        docker("network", "rm", late, check=False)

    started = time.monotonic()
    never = stack.dc("run", "--rm", "--no-deps", "-e", "POSTGRES_HOST=nowhere.invalid",
                     "-e", "DATABASE_WAIT_SECONDS=4", "migrations", check=False)  # fmt: skip
    took = time.monotonic() - started
    said = never.stdout + never.stderr
    assert never.returncode != 0 and 4 <= took < 90, (took, said)
    assert "the database did not answer in 4s" in said, said
    assert "migrations: done" not in said, said


def test_static_files_load_through_nginx(stack):
    css = requests.get(stack.url("/static/css/app.css"), timeout=10)
    assert css.status_code == 200 and "text/css" in css.headers["Content-Type"]
    shipped = (stack_repo() / "tests/app/static/css/app.css").read_bytes()
    assert css.content == shipped
    admin_css = requests.get(stack.url("/static/admin/css/base.css"), timeout=10)
    assert admin_css.status_code == 200, "collectstatic output missing from the nginx image"


def stack_repo():
    from mediacms_stack.stack.config import ROOT

    return ROOT


def make_video(stack, seconds: int = 3) -> bytes:
    """A real H.264/AAC clip made by the web image's own ffmpeg."""
    script = (
        f"ffmpeg -y -loglevel error -f lavfi -i testsrc=duration={seconds}:size=320x240:rate=25 "
        f"-f lavfi -i sine=duration={seconds} -c:v libx264 -c:a aac -shortest "
        "-movflags +faststart /tmp/clip.mp4 && cat /tmp/clip.mp4"
    )
    done = stack.dc("exec", "-T", "web", "sh", "-c", script, text=False)
    assert done.stdout[4:8] == b"ftyp"
    return done.stdout


@pytest.fixture(scope="module")
def uploaded(stack, admin):
    video = make_video(stack)
    response = post_patiently(
        stack.url("/api/v1/media"),
        auth=admin,
        data={"title": "smoke clip"},
        files={"media_file": ("smoke clip.mp4", video, "video/mp4")},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    return response.json(), video


def test_upload_is_stored_and_downloadable(stack, uploaded):
    media, video = uploaded
    assert media["duration"] and media["duration"] > 2, "ffprobe did not run in web"
    original = requests.get(stack.url(media["original_url"]), timeout=30)
    assert original.status_code == 200
    assert original.content == video


def test_transcoding_on_celery_long_produces_encoded_file(stack, uploaded):
    media, _ = uploaded
    deadline = time.monotonic() + 240
    while True:
        state = requests.get(stack.url(f"/api/v1/media/{media['id']}"), timeout=10).json()
        if state["encoding_status"] in ("success", "fail") and state["thumbnail_url"]:
            break
        assert time.monotonic() < deadline, f"encoding did not finish: {state}"
        time.sleep(2)
    assert state["encoding_status"] == "success", state
    encoded = requests.get(stack.url(state["encoded_url"]), timeout=30)
    assert encoded.status_code == 200 and encoded.content[4:8] == b"ftyp"
    thumbnail = requests.get(stack.url(state["thumbnail_url"]), timeout=30)
    assert thumbnail.status_code == 200 and thumbnail.content[:3] == b"\xff\xd8\xff"
    long_logs = stack.dc("logs", "celery_long").stdout
    assert "files.tasks.encode_media" in long_logs and "succeeded" in long_logs
    assert "files.tasks.make_thumbnail" in stack.dc("logs", "celery_short").stdout


def admin_login(stack, password) -> requests.Response:
    session = requests.Session()
    page = session.get(stack.url("/admin/login/"), timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
    return session.post(
        stack.url("/admin/login/?next=/admin/"),
        data={"csrfmiddlewaretoken": token, "username": "admin", "password": password},
        headers={"Referer": stack.url("/admin/login/")},
        timeout=10,
    )


#: Django admin's refusal (AdminAuthenticationForm's invalid_login), on its login page
LOGIN_REFUSED = "Please enter the correct username and password for a staff account."


def test_admin_page_and_login(stack):
    ok = admin_login(stack, stack.admin_password)
    assert ok.status_code == 200 and "Site administration" in ok.text
    wrong = admin_login(stack, "not-the-password")
    # the login page again, saying why: a server error is not a refusal
    assert wrong.status_code == 200 and wrong.url.endswith("/admin/login/?next=/admin/")
    assert LOGIN_REFUSED in wrong.text and "Site administration" not in wrong.text


def test_uwsgi_workers_replaced_together_answer_without_loading_the_app_again(stack, admin):
    """Each worker is a fork of a master that loaded the app once (uwsgi.ini): every
    worker replaced at once, after they have served requests, answers without importing
    the app again, and the master held no connection a fork would share."""
    for _ in range(4):  # the workers open their database and Redis connections
        assert requests.get(stack.url("/api/v1/whoami"), auth=admin, timeout=30).ok
    replace_every_worker(stack)
    answer = requests.get(stack.url("/api/v1/whoami"), auth=admin, timeout=60)
    assert answer.status_code == 200 and answer.json()["username"] == "admin", answer.text


@pytest.mark.parametrize(
    "path",
    [
        "/static../etc/passwd",
        "/static/../etc/passwd",
        "/media../etc/passwd",
        "/media/..%2f..%2fetc/passwd",
        "/media/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2F..%2F..%2Fetc/passwd",
        "/custom/static/../../../etc/passwd",
        "/custom/static..%2f..%2fetc/passwd",
    ],
)
def test_traversal_probes_never_leave_the_roots(stack, path):
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    conn.request("GET", path)  # sent exactly as written, no client-side normalisation
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert b"root:" not in body
    assert response.status in (400, 403, 404), (path, response.status)


def test_custom_settings_and_css_apply_after_restart(stack):
    custom = stack.home / "custom"
    (custom / "local_settings.py").write_text('PORTAL_NAME = "Smoke Portal From Custom"\n')
    (custom / "static" / "css").mkdir(parents=True, exist_ok=True)
    (custom / "static" / "css" / "custom.css").write_text("body { color: #123456; }\n")
    stack.dc("restart", "web")
    stack.dc("up", "--detach", "--wait", "web", "nginx")
    home = stack.wait_http("/")
    assert "Smoke Portal From Custom" in home.text
    assert "/custom/static/css/custom.css" in home.text
    css = requests.get(stack.url("/custom/static/css/custom.css"), timeout=10)
    assert css.status_code == 200 and "#123456" in css.text


def test_logs_readable_through_compose(stack):
    requests.get(stack.url("/api/v1/config?logs-probe"), timeout=10)
    web = stack.dc("logs", "web").stdout
    assert "uwsgi" in web.lower() or "spawned" in web.lower()
    assert access_log(stack, "GET /api/v1/config?logs-probe")
    assert "GET /api/v1/config?logs-probe" in web


def test_database_and_media_survive_down_and_up(stack, uploaded):
    media, video = uploaded
    stack.dc("down")
    up = stack.invoke("up", check=False)
    assert up.returncode == 0, up.stderr[-3000:]
    state = requests.get(stack.url(f"/api/v1/media/{media['id']}"), timeout=10).json()
    assert state["title"] == "smoke clip"
    assert requests.get(stack.url(media["original_url"]), timeout=30).content == video
    logs = stack.dc("logs", "migrations").stdout
    assert "existing database, fixtures and admin left as they are" in logs
