"""`invoke status` and `invoke encodings`: what they ask, how they read and print it."""

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from invoke import MockContext, Result

from mediacms_stack.data.artifacts import latest, offsite_record
from mediacms_stack.engines.compose import Compose
from mediacms_stack.procedures import encodings, health, ops
from mediacms_stack.stack.errors import StackError
from mediacms_stack.stack.model import SERVICES

DF_DU = """\
Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/sda1        102400000 51200000  40960000      56% /home/mediacms.io/mediacms/media_files
/dev/sda1        102400000 51200000  40960000      56% /home/mediacms.io/scratch
2048\t/home/mediacms.io/mediacms/media_files
4\t/home/mediacms.io/scratch
"""


def test_queue_depth_sums_each_queue_and_its_priority_lists():
    argv = health.queue_argv(Compose(Path("/deployment")))
    tail = argv[argv.index("EVAL") :]
    assert tail[2:] == ["2", "short_tasks", "long_tasks", "3", "6", "9"]
    assert "'\\6\\22'" in tail[1]  # kombu's separator, \x06\x16, in Lua's decimal escapes
    assert argv[argv.index("-n") + 1] == "1"  # REDIS_LOCATION's database: the broker's
    assert health.parse_queue_depths("3\n0\n") == {"short_tasks": 3, "long_tasks": 0}


@pytest.mark.parametrize("answer", ["", "3\n", "NOAUTH Authentication required.\n", "1\nx\n"])
def test_an_unexpected_redis_answer_is_an_error(answer):
    with pytest.raises(StackError, match="unexpected answer from Redis"):
        health.parse_queue_depths(answer)


def test_sizes_from_df_and_du():
    paths = ["/home/mediacms.io/mediacms/media_files", "/home/mediacms.io/scratch", "/nowhere"]
    sizes = health.parse_sizes(DF_DU, paths)
    assert sizes[paths[0]] == {"bytes": 2048 * 1024, "free": 40960000 * 1024,
                               "total": 102400000 * 1024}  # fmt: skip
    assert sizes[paths[1]]["bytes"] == 4096
    assert sizes["/nowhere"] == {"bytes": None, "free": None, "total": None}


@pytest.mark.parametrize("seconds, shown", [
    (None, "-"), (-3, "0s"), (42, "42s"), (60, "1m"), (7200, "2h 00m"), (3 * 3600 + 65, "3h 01m"),
    (2 * 86400 + 4 * 3600, "2d 04h"),
])  # fmt: skip
def test_format_age(seconds, shown):
    assert ops.format_age(seconds) == shown


@pytest.mark.parametrize("count, shown", [
    (None, "-"), (512, "512 B"), (2048, "2.0 KiB"), (5 * 1024**3, "5.0 GiB"), (3 * 1024**5, "3072.0 TiB"),
])  # fmt: skip
def test_format_bytes(count, shown):
    assert health.format_bytes(count) == shown


def test_the_answer_is_found_among_what_django_prints():
    out = ("10 objects imported automatically (use -v 2 for details).\n\n"
           '@encodings\t{"pending": 2, "listed": []}\n')  # fmt: skip
    assert encodings.parse_answer(out) == {"pending": 2, "listed": []}
    with pytest.raises(StackError, match="no answer"):
        encodings.parse_answer("Traceback ...\n")


def _report(**changes):
    rows = [{"service": s, "state": "running", "health": "healthy", "image": "i", "version": "v"}
            for s in SERVICES]  # fmt: skip
    base = {"project": "p", "version": "v", "services": rows, "unread": {},
            "queues": {"short_tasks": 4, "long_tasks": 1},
            "encodings": {"pending": 1, "running": 0, "failed": 2, "stuck": 0,
                          "oldest_pending_seconds": 90, "stuck_after_seconds": 7200},
            "volumes": {"media_files": {"bytes": 2048, "free": 10, "total": 20}},
            "backups": {"full": None, "database": None, "offsite": None}}  # fmt: skip
    return {**base, **changes}


def test_problems_are_services_not_healthy_stuck_encodings_and_unread_parts():
    assert health.problems_of(_report()) == []  # failed encodings alone are no problem
    rows = [r for r in _report()["services"] if r["service"] != "redis"]
    rows[0] = {**rows[0], "state": "exited", "health": "-"}
    found = health.problems_of(_report(
        services=rows, unread={"queues": "Redis did not answer"},
        encodings={**_report()["encodings"], "stuck": 2}))  # fmt: skip
    assert found == [
        "queues: could not be read: Redis did not answer",
        f"{SERVICES[0]}: exited, -",
        "redis: no container",
        "2 encoding(s) stuck: `invoke encodings` lists them, `invoke encodings --retry` "
        "queues them again",
    ]
    assert health.problems_of(_report(services=None, unread={"services": "x"})) == [
        "services: could not be read: x"
    ]


def test_the_report_for_a_terminal():
    text = health.format_report({**_report(), "problems": []})
    assert "queues     short_tasks 4 waiting, long_tasks 1 waiting" in text
    assert ("encodings  1 pending (oldest 1m), 0 running, 2 failed, 0 stuck (running, not "
            "updated for 2h 00m)") in text  # fmt: skip
    assert "backup     last full: none" in text
    assert "backup     last off-site: never" in text
    assert re.search(r"media_files\s+2\.0 KiB\s+10 B\s+20 B", text)
    assert text.endswith("no problems")


def _backup(dest, name, project, created, folder=False):
    manifest = {"project": project, "created_utc": created.isoformat(timespec="seconds")}
    if folder:
        (dest / name).mkdir()
        (dest / name / "manifest.json").write_text(json.dumps(manifest))
    else:
        (dest / name).write_text("dump")
        (dest / f"{name}.manifest.json").write_text(json.dumps(manifest))


def test_the_last_backup_is_this_projects_newest(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    _backup(tmp_path, "mediacms-20260101T000000Z", "p", now - timedelta(days=2), folder=True)
    _backup(tmp_path, "mediacms-20260102T000000Z", "p", now - timedelta(days=1), folder=True)
    _backup(tmp_path, "mediacms-20260103T000000Z", "other", now, folder=True)
    _backup(tmp_path, "mediacms-db-20260103T000000Z.dump", "p", now)
    assert latest(tmp_path, "mediacms-2*", "p") == (
        tmp_path / "mediacms-20260102T000000Z",
        now - timedelta(days=1),
    )
    assert latest(tmp_path, "mediacms-db-*.dump", "p")[0].name.startswith("mediacms-db-2026")
    assert latest(tmp_path, "mediacms-db-*.dump", "other") is None
    assert latest(tmp_path / "absent", "mediacms-2*", "p") is None


def test_a_part_that_cannot_be_read_is_a_problem_not_the_end(tmp_path):
    """Redis down: the report still has the rest, and says what it could not read."""
    ps = json.dumps({"Service": "web", "State": "running", "Health": "healthy",
                     "Image": "mediacms/mediacms:v"})  # fmt: skip
    answer = (
        '@encodings\t{"pending": 0, "running": 0, "failed": 0, "stuck": 0, '
        '"oldest_pending_seconds": null, "listed": [], "retried": []}'
    )
    c = MockContext(run={
        re.compile(r".* ps --format json.*"): Result(ps),
        re.compile(r".* exec -T redis .*"): Result(stderr="service redis is not running", exited=1),
        re.compile(r".* manage.py shell.*"): Result(answer),
        re.compile(r".* exec -T (web|db) sh -c .*"): Result(DF_DU),
    })  # fmt: skip
    settings = type("S", (), {"version": "v"})()
    data = health.report(c, Compose(tmp_path, project="p"), settings, backups=tmp_path,
                         stuck_after=60)  # fmt: skip
    assert data["queues"] is None and data["unread"]["queues"].startswith("Redis did not answer")
    assert data["encodings"]["stuck_after_seconds"] == 60 and "listed" not in data["encodings"]
    assert data["volumes"]["media_files"]["bytes"] == 2048 * 1024
    assert "redis: no container" in data["problems"]


def test_retry_is_asked_of_django_on_stdin_the_command_stays_the_same(tmp_path):
    commands = []
    for retry in (False, True):
        c = MockContext(run={re.compile(r".*"): Result('@encodings\t{"listed": []}')})
        encodings.ask(c, Compose(tmp_path), stuck_after=7200, details=True, retry=retry)
        commands.append(c.run.call_args[0][0])
        request = json.loads(c.run.call_args[1]["in_stream"].getvalue())
        assert request == {"stuck_after": 7200, "details": True, "retry": retry}
    assert commands[0] == commands[1] and " exec -T web python manage.py shell -c " in commands[0]


def test_the_encodings_script_queues_through_the_trees_own_task():
    """What the script relies on in MediaCMS, and how it calls encode_media."""
    code = encodings.ENCODINGS_CODE
    assert 'apps.get_model("files", "Encoding")' in code
    assert "from files.tasks import encode_media" in code
    assert "encode_media.apply_async(kwargs=kwargs)" in code
    assert '"encoding_url" in takes' in code  # 7.x trees take it, 8.x trees do not
    compile(code, "encodings", "exec")


def test_the_last_full_backup_says_whether_and_when_it_was_verified(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    _backup(tmp_path, "mediacms-20260101T000000Z", "p", now - timedelta(days=1), folder=True)
    unverified = health._backups(tmp_path, "p")
    assert unverified["full"]["verified"] is None
    text = health.format_report({**_report(backups=unverified), "problems": []})
    assert "; not verified" in text
    record = {"verified_utc": (now - timedelta(hours=2)).isoformat(), "outcome": "failed",
              "checks": {"database": {"ok": True, "detail": "3 tables"},
                         "media": {"ok": False, "detail": "1 file(s) missing: a"}}}  # fmt: skip
    (tmp_path / "mediacms-20260101T000000Z" / "verified.json").write_text(json.dumps(record))
    said = health._backups(tmp_path, "p")
    verified = said["full"]["verified"]
    assert verified["outcome"] == "failed" and verified["failed"] == ["media: 1 file(s) missing: a"]
    assert 7100 < verified["age_seconds"] < 7300
    report = _report(backups=said)
    assert health.problems_of(report) == [
        "the last full backup failed its verification: media: 1 file(s) missing: a"
    ]
    assert "; verified 2h 00m ago: failed" in health.format_report({**report, "problems": []})
    record.update(outcome="passed", checks={"database": {"ok": True, "detail": "3 tables"}})
    (tmp_path / "mediacms-20260101T000000Z" / "verified.json").write_text(json.dumps(record))
    assert health.problems_of(_report(backups=health._backups(tmp_path, "p"))) == []


def test_the_last_offsite_snapshot_is_the_one_backup_offsite_recorded(tmp_path):
    """Read from the record, never from restic; a missing or damaged record is None."""
    assert health._backups(tmp_path, "p")["offsite"] is None
    assert health._backups(tmp_path / "absent", "p")["offsite"] is None
    record = offsite_record(tmp_path, "p")
    for damaged in ("{", "[]", '{"snapshot": "ab12cd34ef"}',
                    '{"snapshot": "ab12cd34ef", "created_utc": "yesterday"}',
                    '{"snapshot": "ab12cd34ef", "created_utc": "2026-01-01T00:00:00"}',
                    '{"snapshot": null, "created_utc": "2026-01-01T00:00:00+00:00"}'):  # fmt: skip
        record.write_text(damaged)
        assert health._backups(tmp_path, "p")["offsite"] is None, damaged
    created = (datetime.now(UTC) - timedelta(hours=3)).isoformat(timespec="seconds")
    record.write_text(json.dumps({"project": "p", "snapshot": "ab12cd34ef56", "created_utc":
                                  created, "repository": "sftp:u@h:/r", "folder": "/b/f"}))  # fmt: skip
    said = health._backups(tmp_path, "p")["offsite"]
    assert {k: v for k, v in said.items() if k != "age_seconds"} == {
        "snapshot": "ab12cd34ef56", "created_utc": created, "repository": "sftp:u@h:/r",
        "folder": "/b/f"}  # fmt: skip
    assert 10790 < said["age_seconds"] < 10810
    assert health._backups(tmp_path, "other")["offsite"] is None  # another project's record
    text = health.format_report({**_report(backups={"full": None, "database": None,
                                                    "offsite": said}), "problems": []})  # fmt: skip
    assert "backup     last off-site: 3h 00m ago: snapshot ab12cd34 in sftp:u@h:/r" in text


def test_the_periodic_look_for_stuck_encodings_uses_the_tasks_threshold():
    """cms/stack_tasks.py (in the images, without this package) and `invoke status` /
    `invoke encodings` call the same encodings stuck."""
    source = (Path(__file__).parents[2] / "config" / "django" / "stack_tasks.py").read_text()
    found = re.search(r"^STUCK_MINUTES = (\d+)$", source, re.M)
    assert found and int(found.group(1)) == encodings.STUCK_AFTER_MINUTES
