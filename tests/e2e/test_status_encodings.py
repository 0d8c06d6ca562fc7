"""`invoke status` and `invoke encodings` on a stack of their own (workers are stopped
here, which the shared stack's other tests must not see).

A healthy site reports no problem and, with 1,000 media items, how long status takes;
with the workers stopped, the queue depths move as tasks are queued; a failed encoding
and a stuck one are found, `encodings --retry -n` changes nothing, `encodings --retry`
queues both through encode_media, and once the workers are back the failed one is done.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import pytest
import requests
from conftest import Stack, new_deployment, running
from test_checklist import make_video

from mediacms_stack.stack.model import SERVICES

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
    with running(new_deployment(home, f"mediacms-status-{os.getpid()}"), request) as deployment:
        yield deployment


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
    clip = requests.post(site.url("/api/v1/media"), auth=admin, data={"title": "retry me"},
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
