import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from celery.beat import PersistentScheduler
from celery.schedules import crontab
from invoke import Context

from mediacms_stack.procedures import doctor
from mediacms_stack.stack import config
from mediacms_stack.stack.errors import StackError

spec = importlib.util.spec_from_file_location("healthcheck", config.ROOT / "scripts/healthcheck.py")
healthcheck = importlib.util.module_from_spec(spec)
spec.loader.exec_module(healthcheck)


def test_an_older_env_passes_with_defaults_but_never_without_its_secrets(home):
    env = home / ".env"
    kept = [line for line in env.read_text().splitlines() if not line.startswith("HTTPS_PORT=")]
    env.write_text("\n".join(kept) + "\n")
    check = doctor.CHECKS["env"](Context(), config.load(home))
    assert check.ok and check.info and "HTTPS_PORT" in check.detail, check
    assert "invoke upgrade" in check.fix
    env.write_text("\n".join(k for k in kept if not k.startswith("REDIS_PASSWORD=")) + "\n")
    check = doctor.CHECKS["env"](Context(), config.load(home))
    assert not check.ok and "REDIS_PASSWORD" in check.detail, check
    assert "--force" not in check.fix  # regenerating secrets would lock out the database


def test_env_check_passes_on_fresh_init_and_fails_when_readable(home):
    settings = config.load(home)
    assert doctor.CHECKS["env"](Context(), settings).ok
    (home / ".env").chmod(0o644)
    check = doctor.CHECKS["env"](Context(), settings)
    assert not check.ok and "chmod 600" in check.fix


def test_custom_settings_syntax_error_is_reported(home):
    (home / "custom").mkdir()
    (home / "custom" / "local_settings.py").write_text("PORTAL_NAME = 'x\n")
    check = doctor.CHECKS["custom"](Context(), config.load(home))
    assert not check.ok and "local_settings.py" in check.detail


def test_table_marks_failures_with_fix():
    text = doctor.table([doctor.Check("a", True, "fine"), doctor.Check("b", False, "bad", "do x")])
    assert "PASS  a  fine" in text and "FAIL  b  bad  -> do x" in text


class _Volumes:
    def __init__(self, names):
        self.volumes = self
        self.names = names

    def list(self):
        return [type("Volume", (), {"name": n}) for n in self.names]


@pytest.fixture
def volumes(monkeypatch):
    def present(*names):
        monkeypatch.setattr(doctor.engine, "engine_answers", lambda: True)
        monkeypatch.setattr(
            doctor.engine, "client", lambda: contextlib.nullcontext(_Volumes(names))
        )

    return present


def test_a_stack_not_deployed_yet_is_information_with_both_next_steps(home, volumes):
    settings = config.load(home)
    volumes("someone-else_media_files")
    check = doctor.CHECKS["volumes"](Context(), settings)
    assert check.ok and check.info and "not deployed" in check.detail
    line = doctor.table([check])
    assert line.startswith("INFO  volumes")
    assert "invoke up" in line and "invoke migrate-from-7x" in line


def test_some_volumes_missing_is_a_problem_and_all_present_passes(home, volumes):
    settings = config.load(home)
    volumes(f"{settings.project}_media_files", f"{settings.project}_logs")
    check = doctor.CHECKS["volumes"](Context(), settings)
    assert not check.ok and f"{settings.project}_postgres_data" in check.detail
    assert "invoke restore" in check.fix
    volumes(*(f"{settings.project}_{v}" for v in ("media_files", "logs", "postgres_data")))
    check = doctor.CHECKS["volumes"](Context(), settings)
    assert check.ok and not check.info and doctor.table([check]).startswith("PASS")


def test_the_main_process_must_be_the_celery_role_and_running():
    code = "import time; time.sleep(30)"
    beat = subprocess.Popen([sys.executable, "-c", code, "celery", "beat"])
    other = subprocess.Popen([sys.executable, "-c", code, "celery", "worker"])
    try:
        proc = f"/proc/{beat.pid}"
        # until each child has exec'd: its command line is empty or its parent's before
        assert _until(lambda: healthcheck.main_process("beat", proc) is None), (
            healthcheck.main_process("beat", proc)
        )
        assert _until(lambda: b"worker" in Path(f"/proc/{other.pid}/cmdline").read_bytes())
        beat.send_signal(signal.SIGSTOP)
        assert _until(
            lambda: "is stopped (state T)" in (healthcheck.main_process("beat", proc) or "")
        )
        beat.send_signal(signal.SIGCONT)
        assert _until(lambda: healthcheck.main_process("beat", proc) is None)
        assert "is not celery beat" in healthcheck.main_process("beat", f"/proc/{other.pid}")
        assert healthcheck.main_process("worker", f"/proc/{other.pid}") is None
    finally:
        for process in (beat, other):
            process.kill()
            process.wait()
    assert "no process" in healthcheck.main_process("beat", f"/proc/{beat.pid}")


def _until(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def scheduler(tmp_path):
    """celery beat's own PersistentScheduler writing a schedule file, held open like beat."""
    opened = []

    def make(entries, timezone="UTC", **last_runs):
        app = Celery(set_as_current=False)
        app.conf.timezone = timezone
        app.conf.beat_schedule = {
            name: {"task": f"tasks.{name}", "schedule": spec} for name, spec in entries.items()
        }
        path = tmp_path / "celerybeat-schedule"
        sched = PersistentScheduler(app=app, schedule_filename=str(path), lazy=False)
        opened.append(sched)
        now = app.now()  # beat stamps last runs in its own time zone
        for name, ago in last_runs.items():
            sched.schedule[name].last_run_at = now - ago
        sched.sync()
        return str(path)

    yield make
    for sched in opened:
        sched.close()


def _daily_at(when: datetime) -> crontab:
    return crontab(minute=when.minute, hour=when.hour)


def test_a_beat_with_nothing_due_for_hours_is_healthy_long_after_its_last_write(
    scheduler, tmp_path
):
    fired = datetime.now(UTC) - timedelta(minutes=70)  # relative: right at any hour of the day
    path = scheduler(
        {"daily": _daily_at(fired), "ten_hours": timedelta(hours=10)},
        daily=timedelta(minutes=65),  # sent 5 minutes late; next due in about 23 hours
        ten_hours=timedelta(hours=9, minutes=50),
    )
    hour_ago = time.time() - 3600  # nothing was written for an hour: the old check failed
    for file in tmp_path.iterdir():
        os.utime(file, (hour_ago, hour_ago))
    assert healthcheck.overdue(path, "300") is None
    assert healthcheck.overdue(path, "5") is None


def test_an_entry_beat_did_not_send_is_overdue(scheduler):
    now = datetime.now(UTC)
    path = scheduler({"daily": _daily_at(now - timedelta(hours=2)), "minutely": 60.0},
                     daily=timedelta(hours=3), minutely=timedelta(seconds=100))  # fmt: skip
    problem = healthcheck.overdue(path, "300")
    assert "'daily' was due 72" in problem and "beat is not sending it" in problem, problem


def test_the_margin_covers_beat_flushing_its_file_late(scheduler):
    path = scheduler({"minutely": 60.0}, minutely=timedelta(seconds=200))
    assert healthcheck.overdue(path, "300") is None  # sent, not yet flushed to the file
    assert "'minutely' was due 14" in healthcheck.overdue(path, "100")


def test_due_times_are_computed_in_beats_time_zone(scheduler):
    local = datetime.now(ZoneInfo("America/New_York"))
    # due in 2 hours New York time; read as UTC it would have been due hours ago
    path = scheduler({"evening": _daily_at(local + timedelta(hours=2))},
                     timezone="America/New_York", evening=timedelta(hours=4))  # fmt: skip
    assert healthcheck.overdue(path, "300") is None


def test_missing_or_foreign_schedule_file(tmp_path):
    assert "does not exist yet" in healthcheck.overdue(str(tmp_path / "nothing"), "300")
    junk = tmp_path / "junk"
    junk.write_text("not a database")
    assert "not a schedule database" in healthcheck.overdue(str(junk), "300")


def test_beat_check_reports_an_unreachable_broker(monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("REDIS_LOCATION", f"redis://127.0.0.1:{port}/1")
    problem = healthcheck.broker_reachable()
    assert f"broker 127.0.0.1:{port} unreachable" in problem and "111" in problem, problem


def test_the_expensive_check_runs_once_a_minute_while_it_passes_and_every_time_it_fails(tmp_path):
    stamp, calls = tmp_path / "passed", []

    def check(problem):
        return lambda: calls.append(problem) or problem

    assert healthcheck.now_and_then(check(None), stamp) is None and calls == [None]
    assert healthcheck.now_and_then(check("never asked"), stamp) is None and len(calls) == 1
    os.utime(stamp, (time.time() - 61, time.time() - 61))  # a minute later
    assert healthcheck.now_and_then(check("hung"), stamp) == "hung" and not stamp.exists()
    assert healthcheck.now_and_then(check("still hung"), stamp) == "still hung"
    assert healthcheck.now_and_then(check(None), stamp) is None and stamp.exists()
    assert calls == [None, "hung", "still hung", None]


def _one_reply_server(replies: list[bytes]):
    return _answering_server(lambda received: replies)


def _answering_server(answer):
    """A listening socket that reads one request and sends what ``answer`` makes of it:
    what Redis says."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received = []

    def serve():
        conn, _ = server.accept()
        with conn:
            received.append(conn.recv(65536))
            conn.sendall(b"".join(answer(received[-1])))

    import threading

    threading.Thread(target=serve, daemon=True).start()
    return server, received


@pytest.mark.parametrize(
    "replies, problem",
    [
        ([b"+OK\r\n", b"+PONG\r\n"], None),
        ([b"-WRONGPASS invalid username-password pair\r\n"], "refused: -WRONGPASS"),
        ([b"+OK\r\n", b"-LOADING Redis is loading\r\n"], "refused: -LOADING"),
        ([], "refused: connection closed"),
    ],
    ids=["pong", "wrong-password", "loading", "closed"],
)
def test_the_broker_check_logs_in_and_wants_pong(monkeypatch, replies, problem):
    server, received = _one_reply_server(replies)
    with server:
        port = server.getsockname()[1]
        monkeypatch.setenv("REDIS_LOCATION", f"redis://:s%40cret@127.0.0.1:{port}/1")
        found = healthcheck.broker_reachable()
    assert received == [b"*2\r\n$4\r\nAUTH\r\n$6\r\ns@cret\r\n*1\r\n$4\r\nPING\r\n"]
    if problem is None:
        assert found is None
    else:
        assert found.startswith(f"broker 127.0.0.1:{port} ") and problem in found, found


def test_trusted_proxies_must_be_addresses_or_networks(home):
    settings = config.update(config.load(home), {"TRUSTED_PROXIES": ""})
    check = doctor.CHECKS["proxies"](Context(), settings)
    assert check.ok and "ignored" in check.detail
    settings = config.update(settings, {"TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7,2001:db8::/32"})
    check = doctor.CHECKS["proxies"](Context(), settings)
    assert check.ok and "10.0.0.0/8, 192.0.2.7, 2001:db8::/32" in check.detail, check
    settings = config.update(settings, {"TRUSTED_PROXIES": "10.0.0.1/8, abc, 10.0.0.0/8"})
    check = doctor.CHECKS["proxies"](Context(), settings)
    assert not check.ok and check.detail.startswith("TRUSTED_PROXIES: 10.0.0.1/8, abc not"), check


def test_whole_numbers_of_the_env_are_checked_before_anything_starts(home):
    settings = config.update(config.load(home), {"UPLOAD_DISK_RESERVE_MB": "", "HTTP_PORT": "8080"})
    check = doctor.CHECKS["numbers"](Context(), settings)
    assert check.ok, check
    bad = {"UPLOAD_DISK_RESERVE_MB": "2G", "HTTP_PORT": "70000", "MEDIA_GATE_CACHE_SECONDS": "301",
           "UWSGI_PROCESSES": "0", "CELERY_LONG_CONCURRENCY": "²"}  # fmt: skip
    settings = config.update(settings, bad)
    check = doctor.CHECKS["numbers"](Context(), settings)
    assert not check.ok and check.fix.endswith(str(settings.env_file)), check
    for key, value in bad.items():
        assert f"{key}={value!r}" in check.detail, (key, check.detail)
    # the port checks say so too, instead of stopping on the value
    assert not doctor.CHECKS["port"](Context(), settings).ok
    assert "HTTP_PORT" in doctor.CHECKS["https-ports"](Context(), settings).detail
    with pytest.raises(
        StackError, match=r"^numbers: HTTP_PORT='70000' \(a whole number from 1 to 65535\); UPLOAD"
    ):
        doctor.require(Context(), settings, "numbers")


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def test_the_celery_ping_asks_over_redis_as_celery_does_and_reads_the_answer(monkeypatch):
    """answers_ping: one write (log in, bind a reply queue, broadcast, wait, clean up) and
    the worker's answer read back; a real worker answers it in the e2e and acceptance tiers."""
    import base64
    import json

    monkeypatch.setattr(socket, "gethostname", lambda: "box")
    sent = {}

    def answer(received: bytes) -> list[bytes]:
        words = received.split(b"\r\n")
        question = json.loads(words[words.index(b"PUBLISH") + 4])
        asked = json.loads(base64.b64decode(question["body"]))
        sent.update(asked=asked, words=words)
        reply = {"body": base64.b64encode(json.dumps({"short@box": {"ok": "pong"}}).encode()).decode(),
                 "headers": {"ticket": asked["ticket"]}, "properties": {"body_encoding": "base64"}}  # fmt: skip
        queue = f"{asked['reply_to']['routing_key']}.reply.celery.pidbox".encode()
        return [b"+OK\r\n", b"+OK\r\n", b":1\r\n", b":1\r\n",
                b"*2\r\n" + _bulk(queue) + _bulk(json.dumps(reply).encode()), b":1\r\n", b":1\r\n"]  # fmt: skip

    server, _ = _answering_server(answer)
    with server:
        monkeypatch.setenv("REDIS_LOCATION", f"redis://:pw@127.0.0.1:{server.getsockname()[1]}/3")
        assert healthcheck.answers_ping("short") is None
    asked, words = sent["asked"], sent["words"]
    assert asked["method"] == "ping" and asked["destination"] == ["short@box"]
    assert asked["reply_to"]["exchange"] == "reply.celery.pidbox"
    commands = [
        w
        for w in words
        if w in (b"AUTH", b"SELECT", b"SADD", b"PUBLISH", b"BRPOP", b"DEL", b"SREM")
    ]
    assert commands == [b"AUTH", b"SELECT", b"SADD", b"PUBLISH", b"BRPOP", b"DEL", b"SREM"]
    assert b"/3.celery.pidbox" in words and b"3" in words  # the broker's database


def test_a_celery_ping_without_an_answer_or_with_another_ticket_fails(monkeypatch):
    for brpop, problem in ((b"*-1\r\n", "no ping reply from short@box within 5s"),
                           (b"*2\r\n" + _bulk(b"q") + _bulk(b'{"body": "{}", "headers": {"ticket": "x"}}'),
                            "no ping reply from short@box: '{}'")):  # fmt: skip
        monkeypatch.setattr(socket, "gethostname", lambda: "box")
        server, _ = _answering_server(lambda received, brpop=brpop: [
            b"+OK\r\n", b":1\r\n", b":1\r\n", brpop, b":1\r\n", b":1\r\n"])  # fmt: skip
        with server:
            monkeypatch.setenv("REDIS_LOCATION", f"redis://127.0.0.1:{server.getsockname()[1]}/1")
            assert healthcheck.answers_ping("short") == problem


def test_redis_replies_of_every_kind_are_read():
    import io

    replies = io.BytesIO(b"+OK\r\n:42\r\n$3\r\nab\n\r\n$-1\r\n*2\r\n:1\r\n*-1\r\n")
    assert [healthcheck._reply(replies) for _ in range(5)] == ["OK", 42, b"ab\n", None, [1, None]]
    with pytest.raises(healthcheck.RedisRefused, match="-NOAUTH"):
        healthcheck._reply(io.BytesIO(b"-NOAUTH Authentication required.\r\n"))
    with pytest.raises(healthcheck.RedisRefused, match="connection closed"):
        healthcheck._reply(io.BytesIO(b""))
