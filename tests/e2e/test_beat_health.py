"""celery beat's health check on a real beat whose schedule has nothing due for hours.

Real MediaCMS schedules tasks every 10 hours at most, so its beat leaves its schedule
file alone for hours: a check on the file's age turned such a beat unhealthy. Here one
beat runs from the worker image, as compose runs it, with a 10-hour schedule set in
custom/local_settings.py, and a health check whose margin (10 s) is far shorter than the
test: it must stay healthy. Stopped (SIGSTOP) or cut off from Redis, it must not.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from conftest import Stack, new_deployment, report_failure

pytestmark = pytest.mark.e2e

MARGIN = 10  # seconds an entry may be overdue; the old check's window was 300 s
SCHEDULE = "/tmp/celerybeat-schedule"
LONG_SCHEDULE = """\
from celery.schedules import crontab

# Like MediaCMS 8.3.2: nothing runs more often than every 10 hours.
CELERY_BEAT_SCHEDULE = {
    "every_ten_hours": {"task": "files.tasks.heartbeat", "schedule": crontab(minute=1, hour="*/10")},
}
"""


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def health(name: str) -> dict:
    return json.loads(docker("inspect", "--format", "{{json .State.Health}}", name).stdout)


def wait_status(name: str, wanted: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (state := health(name))["Status"] != wanted:
        assert time.monotonic() < deadline, f"beat not {wanted} after {timeout}s: {state}"
        time.sleep(1)
    return state


@pytest.fixture(scope="module")
def beat(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    home = tmp_path_factory.mktemp("beat")
    deployment = new_deployment(home, f"mediacms-beat-{os.getpid()}")
    (home / "custom/local_settings.py").write_text(LONG_SCHEDULE)
    name = f"{deployment.settings.project}-beat"
    # the service exactly as compose runs it, with a health check whose margin is short
    override = home / "beat-check.yaml"
    check = ["CMD", "python", "/usr/local/bin/healthcheck.py", "beat", SCHEDULE, str(MARGIN)]
    override.write_text(json.dumps({"services": {"celery_beat": {"healthcheck": {
        "test": check, "interval": "2s", "timeout": "15s", "retries": 2,
        "start_period": "60s"}}}}))  # fmt: skip
    compose = ["docker", "compose", "--project-directory", str(home),
               "--project-name", deployment.settings.project,
               "--file", str(home / "docker-compose.yaml"), "--file", str(override)]  # fmt: skip
    try:
        deployment.dc("up", "--detach", "--wait", "redis")
        config = json.loads(deployment.dc("config", "--format", "json").stdout)
        network = config["networks"]["data"]["name"]  # beat talks to redis there only
        subprocess.run([*compose, "run", "--detach", "--no-deps", "--name", name, "celery_beat"],
                       capture_output=True, text=True, check=True)  # fmt: skip
        yield name, network, deployment
    finally:
        if request.session.testsfailed:
            print(docker("logs", "--tail", "40", name, check=False).stderr)
            report_failure(deployment)
        docker("rm", "--force", name, check=False)
        deployment.dc("down", "--volumes", "--remove-orphans", check=False)


def test_a_beat_with_nothing_due_for_hours_stays_healthy(beat: tuple[str, str, Stack]):
    name, _, _ = beat
    wait_status(name, "healthy")
    entries = docker("exec", name, "python", "-c",
                     f"import shelve; print(sorted(shelve.open({SCHEDULE!r}, 'r')['entries']))")  # fmt: skip
    # the operator's entry and the images' own (every 15 minutes): none due during the test
    assert entries.stdout.strip() == "['every_ten_hours', 'stack-stuck-encodings']", entries
    started = time.monotonic()
    while time.monotonic() - started < 60:  # six times the margin
        state = health(name)
        assert state["Status"] == "healthy" and state["FailingStreak"] == 0, state
        time.sleep(2)
    assert all(entry["ExitCode"] == 0 for entry in state["Log"]), state["Log"]
    # the file was not written during the run: a check on its age would have failed
    written = int(docker("exec", name, "stat", "-c", "%Y", SCHEDULE).stdout)
    assert time.time() - written > 5 * MARGIN


def test_a_stopped_beat_turns_unhealthy_and_recovers(beat: tuple[str, str, Stack]):
    name, _, _ = beat
    wait_status(name, "healthy")
    docker("kill", "--signal", "STOP", name)
    try:
        state = wait_status(name, "unhealthy", timeout=30)
        assert "is stopped (state T)" in state["Log"][-1]["Output"], state["Log"][-1]
    finally:
        docker("kill", "--signal", "CONT", name)
    wait_status(name, "healthy", timeout=30)


def test_a_beat_cut_off_from_redis_turns_unhealthy(beat: tuple[str, str, Stack]):
    name, network, _ = beat
    wait_status(name, "healthy")
    docker("network", "disconnect", network, name)
    try:
        state = wait_status(name, "unhealthy", timeout=60)
        assert "broker redis:6379" in state["Log"][-1]["Output"], state["Log"][-1]
    finally:
        docker("network", "connect", network, name)
    wait_status(name, "healthy", timeout=60)
