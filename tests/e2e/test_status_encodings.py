"""`invoke status`, `invoke encodings` and the metrics overlay on a stack of their own
(workers are stopped here, which the shared stack's other tests must not see).

A healthy site reports no problem and, with 1,000 media items, how long status takes;
with the workers stopped, the queue depths move as tasks are queued; a failed encoding
and a stuck one are found, `encodings --retry -n` changes nothing, `encodings --retry`
queues both through encode_media, and once the workers are back the failed one is done.
The stack runs with `up --metrics`: Prometheus scrapes every exporter, sees the queue of an
upload grow while the workers are stopped and empty once they are back, and nothing of the
overlay can be reached from outside or reads MediaCMS's data.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import pytest
import requests
from conftest import REPO, Stack, free_port, new_deployment, running
from test_checklist import make_video

from mediacms_stack.stack.model import SERVICES
from tests.uploads import post_patiently

pytestmark = pytest.mark.e2e

MEDIA_COUNT = 1000
#: A media item with no file and an Encoding left "running" three hours ago.
MAKE_STUCK = """
from datetime import timedelta
from django.utils import timezone
from files.models import Encoding, EncodingProfile, Media
from users.models import User
# bulk_create sends no post_save: no encoding of its own is queued, as an upload's would be
[media] = Media.objects.bulk_create([Media(title="stuck", user=User.objects.get(username="admin"),
                                           media_file="original/user/admin/missing.mp4")])
encoding = Encoding.objects.create(media=media, profile=EncodingProfile.objects.first(),
                                   status="running")
Encoding.objects.filter(pk=encoding.pk).update(update_date=timezone.now() - timedelta(hours=3))
print(encoding.pk)
"""
MAKE_MANY = f"""
from files.models import Encoding, EncodingProfile, Media
from users.models import User
admin = User.objects.get(username="admin")
made = Media.objects.bulk_create(
    [Media(title=f"bulk {{i}}", user=admin, media_file=f"original/bulk/{{i}}.mp4",
           encoding_status="success") for i in range({MEDIA_COUNT})])
profile = EncodingProfile.objects.first()
Encoding.objects.bulk_create(
    [Encoding(media=m, profile=profile, status="success") for m in made])
print(Media.objects.count())
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    home = tmp_path_factory.mktemp("status")
    for name in METRICS_FILES:
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, home / name)
    deployment = new_deployment(home, f"mediacms-status-{os.getpid()}",
                                METRICS_PORT=str(free_port()))  # fmt: skip
    with running(deployment, request, "--metrics") as deployment:
        yield deployment


#: What the metrics overlay reads from the deployment folder.
METRICS_FILES = ("docker-compose-metrics.yaml", "config/nginx/metrics.conf",
                 "config/prometheus/prometheus.yml", "config/postgres/metrics-role.sql")  # fmt: skip
METRICS_JOBS = {"prometheus", "nginx", "postgres", "redis", "redis_cache"}
#: The Celery queues' depth as Prometheus has it (every priority step's list summed).
QUEUED = 'sum(redis_key_size{db="db1",key=~"(short|long)_tasks.*"}) or vector(0)'


def prometheus(stack: Stack, path: str, **params: str) -> dict:
    port = stack.settings.get("METRICS_PORT")
    answer = requests.get(f"http://127.0.0.1:{port}{path}", params=params, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def queued_in_prometheus(stack: Stack) -> float:
    [sample] = prometheus(stack, "/api/v1/query", query=QUEUED)["result"]
    return float(sample["value"][1])


def wait_for(what: str, check, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout:g}s"
        time.sleep(2)


def containers(stack: Stack, service: str) -> list[dict]:
    listed = stack.dc("ps", "--format", "json", service).stdout
    return [json.loads(line) for line in listed.splitlines() if line.strip()]


def django(stack: Stack, code: str) -> str:
    return stack.dc("exec", "-T", "web", "python", "manage.py", "shell", "-c", code).stdout


def status(stack: Stack) -> tuple[int, dict]:
    done = stack.invoke("status", "--json", check=False)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def encoding_state(stack: Stack, pk: int) -> str:
    code = f"from files.models import Encoding; print(Encoding.objects.get(pk={pk}).status)"
    return django(stack, code).split()[-1]


def test_a_healthy_site_and_the_time_status_takes_with_1000_media(site: Stack):
    code, report = status(site)
    assert code == 0 and report["problems"] == [], report
    assert {row["service"] for row in report["services"]} >= set(SERVICES)
    assert set(report["queues"]) == {"short_tasks", "long_tasks"}
    assert report["encodings"]["stuck"] == 0 and report["version"] == site.settings.version
    media = report["volumes"]["media_files"]
    assert media["bytes"] > 0 and 0 < media["free"] < media["total"]
    assert report["volumes"]["postgres_data"]["bytes"] > 1_000_000
    assert report["backups"] == {"full": None, "database": None, "offsite": None}

    assert django(site, MAKE_MANY).split()[-1] == str(MEDIA_COUNT)
    site.invoke("backup-db")
    seconds = []
    for _ in range(3):
        started = time.monotonic()
        code, report = status(site)
        seconds.append(time.monotonic() - started)
    assert code == 0, report["problems"]
    assert report["backups"]["database"]["age_seconds"] < 600
    print(f"\n[measured] invoke status --json with {MEDIA_COUNT} media: "
          f"{', '.join(f'{s:.2f}' for s in seconds)} s (median {statistics.median(seconds):.2f} s; "
          f"report's own time {report['seconds']} s)", file=sys.stderr)  # fmt: skip
    assert statistics.median(seconds) < 60


def test_queues_move_and_failed_and_stuck_encodings_are_retried(site: Stack):
    admin = requests.auth.HTTPBasicAuth("admin", site.admin_password)
    clip = post_patiently(site.url("/api/v1/media"), auth=admin, data={"title": "retry me"},
                         files={"media_file": ("clip.mp4", make_video(site), "video/mp4")},
                         timeout=60)  # fmt: skip
    assert clip.status_code == 201, clip.text
    token = clip.json()["uid"]
    find = (
        f"from files.models import Encoding; print(Encoding.objects.get(media__uid='{token}').pk)"
    )
    failed = int(django(site, find).split()[-1])
    deadline = time.monotonic() + 240
    while encoding_state(site, failed) != "success":
        assert time.monotonic() < deadline, "the upload was not encoded"
        time.sleep(2)

    site.dc("stop", "celery_short", "celery_long")
    django(site, f"from files.models import Encoding; "
                 f"Encoding.objects.filter(pk={failed}).update(status='fail')")  # fmt: skip
    stuck = int(django(site, MAKE_STUCK).split()[-1])
    django(site, "from files.tasks import heartbeat\nfor _ in range(3): heartbeat.delay()")
    code, report = status(site)
    assert code == 1 and report["queues"]["short_tasks"] >= 3, report
    assert report["queues"]["long_tasks"] == 0
    assert (report["encodings"]["failed"], report["encodings"]["stuck"]) == (1, 1), report
    assert any("stuck" in p for p in report["problems"])
    assert any(p.startswith("celery_long:") for p in report["problems"])

    listed = json.loads(site.invoke("encodings", "--json").stdout)["listed"]
    assert {(e["id"], e["kind"]) for e in listed} == {(failed, "fail"), (stuck, "stuck")}

    dry = site.invoke("encodings", "--retry", "-n")
    assert "would queue 2 encoding(s) again" in dry.stdout, dry.stdout
    assert (encoding_state(site, failed), encoding_state(site, stuck)) == ("fail", "running")
    assert status(site)[1]["queues"]["long_tasks"] == 0

    retried = site.invoke("encodings", "--retry")
    assert f"queued again: {failed} {stuck}" in retried.stdout, retried.stdout
    code, report = status(site)
    assert report["queues"]["long_tasks"] == 2, report
    assert report["encodings"]["pending"] == 2 and report["encodings"]["stuck"] == 0

    site.dc("start", "celery_short", "celery_long")
    deadline = time.monotonic() + 300
    while True:
        code, report = status(site)
        if code == 0 and report["queues"] == {"short_tasks": 0, "long_tasks": 0}:
            break
        assert time.monotonic() < deadline, report
        time.sleep(3)
    assert encoding_state(site, failed) == "success"
    # the stuck one ran again and failed for good: its media item has no file
    assert encoding_state(site, stuck) == "fail"
    assert report["encodings"]["failed"] == 1 and report["encodings"]["running"] == 0


def test_prometheus_scrapes_every_target_and_sees_the_queue_of_an_upload(site: Stack):
    def targets_up() -> bool:
        active = prometheus(site, "/api/v1/targets")["activeTargets"]
        return {t["labels"]["job"] for t in active if t["health"] == "up"} == METRICS_JOBS

    wait_for("every target up", targets_up)
    for series in ("nginx_up", "pg_up", "redis_up"):
        values = prometheus(site, "/api/v1/query", query=series)["result"]
        assert values and all(v["value"][1] == "1" for v in values), (series, values)
    assert prometheus(site, "/api/v1/query", query="nginx_http_requests_total")["result"]
    assert prometheus(site, "/api/v1/query", query='pg_database_size_bytes{datname="mediacms"}')[
        "result"]  # fmt: skip

    site.dc("stop", "celery_short", "celery_long")
    admin = requests.auth.HTTPBasicAuth("admin", site.admin_password)
    clip = post_patiently(site.url("/api/v1/media"), auth=admin, data={"title": "queued"},
                         files={"media_file": ("clip.mp4", make_video(site), "video/mp4")},
                         timeout=60)  # fmt: skip
    assert clip.status_code == 201, clip.text
    wait_for("the upload's task in Prometheus", lambda: queued_in_prometheus(site) >= 1)
    site.dc("start", "celery_short", "celery_long")
    wait_for("an empty queue in Prometheus", lambda: queued_in_prometheus(site) == 0, 300)


def test_the_metrics_overlay_is_closed_to_the_outside_and_reads_no_data(site: Stack):
    # nginx's counters are on a listener of their own, never on the published port
    assert "Active connections" not in requests.get(site.url("/stub_status"), timeout=10).text
    [nginx] = containers(site, "nginx")
    assert {p["TargetPort"] for p in nginx["Publishers"] if p["PublishedPort"]} == {8080}
    project = site.compose.project
    for service in ("metrics_postgres", "metrics_redis", "metrics_nginx", "prometheus"):
        [container] = containers(site, service)
        assert "healthy" in container["Status"], container
        published = {(p["URL"], p["PublishedPort"]) for p in container["Publishers"]
                     if p["PublishedPort"]}  # fmt: skip
        port = int(site.settings.get("METRICS_PORT"))
        assert published == ({("127.0.0.1", port)} if service == "prometheus" else set())
        inspected = json.loads(subprocess.run(["docker", "inspect", container["ID"]],
                                              capture_output=True, text=True).stdout)[0]  # fmt: skip
        assert inspected["HostConfig"]["ReadonlyRootfs"] and inspected["HostConfig"]["CapDrop"] == [
            "ALL"
        ]
        networks = set(inspected["NetworkSettings"]["Networks"])
        assert not networks & {f"{project}_frontend", f"{project}_egress", f"{project}_app"}
    # the exporter's role sees statistics, not MediaCMS's tables, and is no superuser
    role = site.settings.get("METRICS_DB_USER", "mediacms_metrics")
    password = (site.home / ".secrets" / "metrics_db_password").read_text()
    asked = site.dc("exec", "-T", "-e", f"PGPASSWORD={password}", "db", "psql", "-h", "127.0.0.1",
                    "-U", role, "-d", "mediacms", "-tAc",
                    "SELECT rolsuper FROM pg_roles WHERE rolname = current_user; "
                    "SELECT count(*) FROM users_user", check=False)  # fmt: skip
    assert asked.stdout.split()[:1] == ["f"], asked
    assert "permission denied" in asked.stderr, asked.stderr


def test_stuck_encodings_are_looked_for_on_a_schedule_and_logged(site: Stack):
    """Beat sends the images' look for stuck encodings every 15 minutes; celery_short runs
    it and logs each stuck one with the command that queues it again."""
    entry = ("from cms.celery import app; e = app.conf.beat_schedule['stack-stuck-encodings']; "
             "print(e['task'], e['schedule'], e['options'])")  # fmt: skip
    said = site.dc("exec", "-T", "celery_beat", "python", "-c", entry).stdout
    assert "cms.stack_tasks.look_for_stuck_encodings 900.0 {'queue': 'short_tasks'}" in said
    stuck = int(django(site, MAKE_STUCK).split()[-1])
    # sent as beat sends it: by name, to the short queue
    django(site, "from cms.celery import app\n"
                 "app.send_task('cms.stack_tasks.look_for_stuck_encodings', queue='short_tasks')")  # fmt: skip

    def logged() -> bool:
        log = site.dc("logs", "--no-log-prefix", "celery_short").stdout
        return any(f"stuck encoding {stuck}: media " in line and "--retry" in line
                   for line in log.splitlines())  # fmt: skip

    wait_for("the stuck encoding in celery_short's log", logged)
    django(site, f"from files.models import Encoding; Encoding.objects.filter(pk={stuck}).delete()")
