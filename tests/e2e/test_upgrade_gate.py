"""The migration gate of `invoke upgrade` and its two paths, end to end, on one stack.

Two new versions of the test application, built from copies of tests/app (in a copy of
this repository, as tests/e2e/test_upgrade.py does, for the same reason):

- `add`: 9101_gate_note adds a nullable column, which the new models read: additive,
  the zero-downtime path;
- `drop`: 9101 and then 9102_drop_gate_note, which drops it again: the maintenance path.

In order: the stack moves to `add` under a loop of GET requests (none fails); the
maintenance page alone (on, off, attacked); a dry run to `drop` shows the plan and changes nothing;
the stack moves to `drop` under the loop (only the 503 page with Retry-After while the
migrations run, the outage measured). The new nginx replaces the old one at the end of
each upgrade: the published port is closed for that moment, so connections refused then
are the one failure allowed: one run of them in a row, a few seconds at most, while the
upgrade runs (README: Upgrades).
"""

from __future__ import annotations

import os
import re

import pytest
import requests
from conftest import new_deployment, running
from dotenv import dotenv_values

from mediacms_stack.stack import model
from tests.traffic import outside_the_swap, report, under_answers
from tests.versions import ADD, DROP, Versions, reads_the_note

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    home = tmp_path_factory.mktemp("gate")
    with running(new_deployment(home, f"mediacms-gate-{os.getpid()}"), request) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def versions(stack, tmp_path_factory):
    """Both versions built before any loop starts (the upgrades' --build then finds every
    layer cached); their images are removed at the end."""
    made = Versions(stack, tmp_path_factory.mktemp("versions"))
    made.add = made.make("gate-add", {"9101_gate_note": ADD}, reads_the_note)
    made.drop = made.make("gate-drop", {"9101_gate_note": ADD, "9102_drop_gate_note": DROP})
    try:
        for version in (made.add, made.drop):
            made.build(version)
        yield made
    finally:
        made.remove(made.add, made.drop)


def upgraded_under_loop(stack, versions, version: str):
    """``invoke upgrade --to version --build`` while Answers runs; (result, loop, start,
    end) in the loop's clock."""
    done, loop, start, end = under_answers(
        stack.base, lambda: versions.upgrade(version, *versions.from_source(version)), limit=600
    )
    print(f"\n{done.stdout}\n{done.stderr[-3000:]}")
    assert done.returncode == 0, done.stderr[-4000:]
    return done, loop, start, end


def column_exists(stack) -> bool:
    settings = stack.settings
    done = stack.dc("exec", "-T", "db", "psql", "-U", settings.get("POSTGRES_USER", "mediacms"),
                    "-d", settings.get("POSTGRES_DB", "mediacms"), "-Atc",
                    "SELECT count(*) FROM information_schema.columns "
                    "WHERE table_name = 'files_media' AND column_name = 'gate_note'")  # fmt: skip
    return done.stdout.strip() == "1"


def test_an_additive_migration_goes_in_beside_the_running_version(stack, versions):
    (old_web,) = stack.dc("ps", "--format", "{{.Name}}", "web").stdout.split()
    done, loop, start, end = upgraded_under_loop(stack, versions, versions.add)
    out = done.stdout
    print(f"\nzero-downtime upgrade: {report(loop, start, end)}")
    assert re.search(r"files\.9101_gate_note\s+AddField media\.gate_note\s+additive\s+"
                     r"a nullable column", out), out  # fmt: skip
    assert "every operation is additive: the zero-downtime path" in out
    assert out.index("zero-downtime path") < out.index("step 4/5")  # said before any change
    assert "step 5/5: the zero-downtime path" in out and "maintenance:" not in out
    assert not outside_the_swap(loop, start, end), report(loop, start, end)
    assert {a[3] for a in loop.answers} <= {200, "ConnectionError"}, report(loop, start, end)
    assert len(loop.during(start, end)) >= 30 and loop.answers[-1][1] > end
    # the old web container went once the new one was healthy; the column is there
    (new_web,) = stack.dc("ps", "--format", "{{.Name}}", "web").stdout.split()
    assert new_web != old_web
    assert column_exists(stack)
    assert "migrations applied (1): files.9101_gate_note" in out


def test_maintenance_answers_every_request_but_the_health_check_until_turned_off(stack):
    on = stack.dc("exec", "-T", "nginx", model.MAINTENANCE_COMMAND, "on")
    assert on.stdout.strip() == "nginx-maintenance: on", on.stdout + on.stderr
    try:
        for path in ("/", "/static/css/x.css", "/media/original/x.mp4", "/admin/login/",
                     "/nginx-healthz"):  # fmt: skip
            page = requests.get(stack.url(path), timeout=30)
            assert page.status_code == 503, (path, page.status_code)
            assert page.headers["Retry-After"] == "30" and "Back in a moment" in page.text
        # what nginx refuses before anything else stays refused; its health check and the
        # pages themselves stay closed to the outside
        for path, status in (("/%2e%2e/x", 400), ("/nginx-health", 403),
                             ("/_unavailable/503.json", 404)):  # fmt: skip
            assert requests.get(stack.url(path), timeout=30).status_code == status, path
        for method in ("GET", "POST", "PUT", "DELETE", "HEAD"):
            api = requests.request(method, stack.url("/api/v1/media"), data={"x": "1"}, timeout=30)
            assert api.status_code == 503 and api.headers["Retry-After"] == "30"
            assert api.headers["Content-Type"] == "application/json"
        # a logged-in upload larger than nginx's 10 MB default: the 503 too, never a 413
        big = requests.post(stack.url("/api/v1/media"), auth=("admin", stack.admin_password),
                            files={"media_file": ("clip.mp4", b"\0" * (20 * 2**20))}, timeout=120)  # fmt: skip
        assert big.status_code == 503 and big.headers["Retry-After"] == "30", big.text[:300]
        # nginx's own health check still answers (from inside its container only)
        health = stack.dc(
            "exec", "-T", "nginx", "curl", "-fsS", "http://127.0.0.1:8080/nginx-health"
        )
        assert health.stdout.strip() == "ok"
        # nothing but the command turns it on or off (a visitor has no say)
        bad = stack.dc("exec", "-T", "nginx", model.MAINTENANCE_COMMAND, "sideways", check=False)
        assert bad.returncode == 2 and "usage" in bad.stderr
        assert requests.get(stack.url("/"), timeout=30).status_code == 503
        off = stack.dc("exec", "-T", "nginx", model.MAINTENANCE_COMMAND, "off")
        assert off.stdout.strip() == "nginx-maintenance: off"
        # the very next request is answered again, without a restart
        assert requests.get(stack.url("/"), timeout=30).status_code == 200
        stack.dc("exec", "-T", "nginx", model.MAINTENANCE_COMMAND, "on")  # for the restart:
    finally:
        stack.dc("restart", "nginx")  # a restarted nginx has a fresh /tmp: not in maintenance
    assert stack.wait_http("/", timeout=60).status_code == 200


def test_a_dry_run_shows_the_plan_and_changes_nothing(stack, versions):
    env_before = stack.settings.env_file.read_text()
    images = stack.dc("ps", "--format", "{{.Name}} {{.Image}}").stdout
    migrations = stack.invoke("manage", "showmigrations files").stdout
    backups = sorted(p.name for p in (stack.home / "backups").glob("*"))
    done = versions.upgrade(versions.drop, "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"files\.9102_drop_gate_note\s+RemoveField media\.gate_note\s+maintenance\s+"
                     r"drops a column the running version reads", out), out  # fmt: skip
    assert "the maintenance path (files.9102_drop_gate_note" in out
    assert "would take the maintenance path; nothing was changed" in out
    assert "step 4/5" not in out
    assert stack.settings.env_file.read_text() == env_before
    assert stack.dc("ps", "--format", "{{.Name}} {{.Image}}").stdout == images
    assert stack.invoke("manage", "showmigrations files").stdout == migrations
    assert sorted(p.name for p in (stack.home / "backups").glob("*")) == backups
    assert column_exists(stack)


def test_a_dropped_column_goes_in_behind_the_maintenance_page(stack, versions):
    done, loop, start, end = upgraded_under_loop(stack, versions, versions.drop)
    out = done.stdout
    print(f"\nmaintenance upgrade: {report(loop, start, end)}")
    assert "step 5/5: the maintenance path" in out
    assert out.index("the maintenance path (") < out.index("step 4/5")
    # while migrations ran: the 503 page with Retry-After, nothing else failed
    assert not outside_the_swap(loop, start, end), report(loop, start, end)
    assert {a[3] for a in loop.answers} <= {200, 503, "ConnectionError"}
    outage = [a for a in loop.answers if a[3] == 503]
    assert outage, report(loop, start, end)  # the page was shown
    assert start < outage[0][0] and outage[-1][1] < end
    # only while the migrations ran and the new version started: 53 s on the 2-core CI
    # machine with two other test stacks busy, about 20 s on a quiet one
    assert outage[-1][1] - outage[0][0] < 120, report(loop, start, end)
    # the page went with the old nginx; the column is gone; the new version serves
    assert dotenv_values(stack.settings.env_file)["MEDIACMS_VERSION"] == versions.drop
    assert not column_exists(stack)
    assert "migrations applied (1): files.9102_drop_gate_note" in out
    assert loop.answers[-1][3] == 200
