"""Restarts and crashes of web fail no request; with no web at all, visitors get a 503.

A stack of its own (web is restarted, killed and stopped here). A thread sends GET / and
GET /api/v1/media in turn to nginx on the stack's 127.0.0.1 port while the operation
runs; an answer of 500 or more, or no answer, is a failure. In order: `invoke restart
--service web` with one web container (a spare answers meanwhile), WEB_REPLICAS=2 and
kill -9 of one of them, uWSGI's workers replaced at the end of their lifetime, then every
web container stopped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime

import pytest
import requests
from conftest import new_deployment, running

from mediacms_stack.stack import config
from tests.traffic import Loop, requests_meanwhile
from tests.uwsgi_workers import LOADED

pytestmark = pytest.mark.e2e


def docker(*args: str) -> str:
    """What the command printed, stdout then stderr (uWSGI logs to stderr)."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=True)
    return done.stdout + done.stderr


def web_containers(stack) -> list[str]:
    names = stack.dc("ps", "--format", "{{.Name}}", "web").stdout.split()
    return sorted(names)


def wait_healthy_web(stack, count: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        rows = [json.loads(line) for line in stack.dc("ps", "--format", "json", "web").stdout
                .splitlines() if line.strip()]  # fmt: skip
        if len(rows) == count and all(r.get("Health") == "healthy" for r in rows):
            return
        assert time.monotonic() < deadline, f"web not {count} healthy: {rows}"
        time.sleep(2)


def started_at(name: str) -> str:
    return docker("inspect", "--format", "{{.State.StartedAt}}", name).strip()


def summary(loop: Loop, start: float, end: float) -> str:
    return (f"{len(loop.answers)} answered in all, {len(loop.during(start, end))} during "
            f"{end - start:.0f} s, {len(loop.failed())} failed {loop.failed()[:5]}, slowest "
            f"{loop.slowest():.1f} s")  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    home = tmp_path_factory.mktemp("zero")
    with running(new_deployment(home, f"mediacms-zero-{os.getpid()}"), request) as deployment:
        yield deployment


def test_restart_of_a_lone_web_fails_no_request(stack):
    (web,) = web_containers(stack)
    before = started_at(web)
    with requests_meanwhile(stack) as loop:
        start = time.monotonic()
        done = stack.invoke("restart", "--service", "web")
        end = time.monotonic()
    print(f"\nrestart web (one container): {summary(loop, start, end)}")
    assert "a spare answers meanwhile" in done.stdout
    assert not loop.failed(), summary(loop, start, end)
    assert {status for *_, status in loop.answers} == {200}, summary(loop, start, end)
    assert len(loop.during(start, end)) >= 30, summary(loop, start, end)
    assert loop.answers[0][0] < start and loop.answers[-1][1] > end  # it ran throughout
    # the same container, restarted; the spare is gone
    assert web_containers(stack) == [web] and started_at(web) != before
    assert "graceful shutdown triggered" in docker("logs", web)


def test_kill_of_one_of_two_webs_fails_no_get(stack):
    config.update(stack.settings, {"WEB_REPLICAS": "2"})
    stack.invoke("up")
    first, second = web_containers(stack)
    with requests_meanwhile(stack) as loop:
        start = time.monotonic()
        docker("kill", "--signal", "KILL", first)
        time.sleep(10)  # the other one answers alone
        docker("start", first)  # and nginx takes the first one back when it listens
        wait_healthy_web(stack, 2)
        end = time.monotonic()
    print(f"\nkill -9 of one of two web containers: {summary(loop, start, end)}")
    assert not loop.failed(), summary(loop, start, end)
    assert {status for *_, status in loop.answers} == {200}, summary(loop, start, end)
    assert len(loop.during(start, end)) >= 30, summary(loop, start, end)
    assert loop.answers[0][0] < start and loop.answers[-1][1] > end
    assert web_containers(stack) == [first, second]


#: uWSGI's line when it replaces a worker whose lifetime is over (docker logs -t)
LIFETIME = re.compile(r"^(\S+) worker (\d+) lifetime reached", re.M)


def test_workers_leave_one_at_a_time_at_their_lifetime_and_fail_no_request(stack):
    """UWSGI_MAX_WORKER_LIFETIME=15: in each web container worker 1 is replaced about 15 s
    after the start and worker 2 5 s after it (uwsgi.ini), each by a fork of the master
    (the app is loaded once), while the rest answer: no request fails."""
    config.update(stack.settings, {"UWSGI_MAX_WORKER_LIFETIME": "15"})
    stack.invoke("up")
    webs = web_containers(stack)
    with requests_meanwhile(stack) as loop:
        start = time.monotonic()
        while True:
            logs = {web: docker("logs", "-t", "--since", started_at(web), web) for web in webs}
            first: dict[str, dict[str, datetime]] = {web: {} for web in webs}
            for web, log in logs.items():
                for stamp, worker in LIFETIME.findall(log):
                    first[web].setdefault(worker, datetime.fromisoformat(stamp[:26]))
            if all(len(seen) >= 2 for seen in first.values()):
                break
            assert time.monotonic() < start + 90, f"no two workers replaced in 90 s: {first}"
            time.sleep(1)
        end = time.monotonic()
    print(f"\nworkers replaced at their lifetime: {summary(loop, start, end)}; {first}")
    for web, seen in first.items():
        assert (seen["2"] - seen["1"]).total_seconds() >= 3, (web, seen)
        assert logs[web].count(LOADED) == 1, f"{web}: a replaced worker loaded the app again"
    assert not loop.failed(), summary(loop, start, end)
    assert {status for *_, status in loop.answers} == {200}, summary(loop, start, end)


def test_without_web_every_request_gets_the_503_page(stack):
    gated = "/media/original/zero-downtime-probe.mp4"  # a file the gate must ask web about
    stack.dc("exec", "-T", "web", "sh", "-c", "mkdir -p media_files/original && "
             "echo zd-secret-bytes > media_files/original/zero-downtime-probe.mp4")  # fmt: skip
    # 30 s at most: the workers' 15 s lifetime above makes uWSGI's rare race likely, a
    # worker respawned as SIGTERM comes is never told to stop (README: App server)
    stack.dc("stop", "--timeout", "30", "web")
    deadline = time.monotonic() + 30
    while requests.get(stack.url("/"), timeout=30).status_code != 503:
        assert time.monotonic() < deadline, "no 503 within 30 s of web stopping"
        time.sleep(1)
    for _ in range(3):
        page = requests.get(stack.url("/"), timeout=30)
        assert page.status_code == 503 and page.headers["Retry-After"] == "30"
        assert page.headers["Content-Type"].startswith("text/html")
        assert page.headers["Cache-Control"] == "no-store"
        assert "Back in a moment" in page.text
        # self-contained: nothing else to load (no script, stylesheet, image or link)
        assert not any(word in page.text for word in ("src=", "href=", "url(", "@import"))
        api = requests.get(stack.url("/api/v1/media"), timeout=30)
        assert api.status_code == 503 and api.headers["Retry-After"] == "30"
        assert api.headers["Content-Type"] == "application/json"
        assert "try again" in api.json()["detail"]
        # the media gate cannot ask: the same page, never the file
        media = requests.get(stack.url(gated), timeout=30)
        assert media.status_code == 503 and media.headers["Retry-After"] == "30"
        assert "zd-secret-bytes" not in media.text
        # a POST is never passed on twice, and gets the same answer
        upload = requests.post(stack.url("/api/v1/media"), data={"title": "x"}, timeout=30)
        assert upload.status_code == 503 and upload.headers["Content-Type"] == "application/json"
        # a logged-in upload larger than nginx's 10 MB default too: the 503, not a 413
        big = requests.post(stack.url("/api/v1/media"), auth=("admin", stack.admin_password),
                            files={"media_file": ("clip.mp4", b"\0" * (20 * 2**20))}, timeout=120)  # fmt: skip
        assert big.status_code == 503 and big.headers["Retry-After"] == "30", big.text[:300]
    hidden = requests.get(stack.url("/_unavailable/503.html"), timeout=30)
    assert hidden.status_code == 404  # internal: only nginx's error_page reaches it
