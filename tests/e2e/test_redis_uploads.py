"""Attacks that try to fill the stack's memory and disks from outside (issue 22).

Redis: a flood of anonymous requests for made-up gated media paths must not grow Redis,
the gate's own endpoint is not reachable from outside in any spelling, and the cache,
once full, evicts only its own keys: the broker's queued tasks and the sessions live on
another Redis that never evicts. Uploads: an anonymous or badly authenticated body of
several GiB is refused by nginx before it reads the body, so almost nothing reaches its
disk; a logged-in upload still goes through (and is spooled, which shows the
measurement sees such writes). All traffic goes to this test's own stack on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
import uuid

import pytest
import requests
from conftest import nginx_problems

from mediacms_stack.procedures.health import REDIS_CLI
from mediacms_stack.stack import config
from tests.uploads import basic, stream_until_answered

pytestmark = pytest.mark.e2e

GIB = 2**30
MIB = 2**20
#: nginx's own pages (Django's say "<h1>Not Found</h1>" / "<h1>403 Forbidden</h1>" too,
#: but never "nginx"): refusals made before the app was asked
NGINX_404 = b"<h1>404 Not Found</h1>"


def redis(stack, service: str, *args: str, **kwargs) -> str:
    """redis-cli in ``service``, with the password from its secret file."""
    done = stack.dc("exec", "-T", service, "sh", "-c", REDIS_CLI, "redis-cli", *args, **kwargs)
    return done.stdout.strip() if isinstance(done.stdout, str) else done.stdout


def info(stack, service: str, section: str) -> dict[str, str]:
    text = redis(stack, service, "INFO", section)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def keys(stack, service: str) -> int:
    return sum(int(re.search(r"keys=(\d+)", v)[1])
               for k, v in info(stack, service, "keyspace").items() if k.startswith("db"))  # fmt: skip


def nginx_written(stack) -> int:
    """Bytes every nginx process has written to storage so far (/proc/PID/io write_bytes,
    counted when a page is dirtied: a body file deleted before it reaches the disk
    counts too)."""
    out = stack.dc("exec", "-T", "nginx", "sh", "-c",
                   "cat /proc/[0-9]*/io 2>/dev/null | grep '^write_bytes'", check=False)  # fmt: skip
    return sum(int(line.split()[1]) for line in out.stdout.splitlines())


def get_many(stack, paths: list[str], threads: int = 4) -> dict[int, int]:
    """GET every path over a few keep-alive connections; returns {status: count}."""
    counts: dict[int, int] = {}
    lock = threading.Lock()

    def worker(part: list[str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=15)
        mine: dict[int, int] = {}
        for path in part:
            conn.request("GET", path, headers={"Host": f"127.0.0.1:{stack.port}"})
            response = conn.getresponse()
            body = response.read()
            status = response.status if NGINX_404 in body or response.status != 404 else -404
            mine[status] = mine.get(status, 0) + 1
            if response.will_close:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=15)
        conn.close()
        with lock:
            for status, n in mine.items():
                counts[status] = counts.get(status, 0) + n

    parts = [paths[i::threads] for i in range(threads)]
    running = [threading.Thread(target=worker, args=(part,)) for part in parts]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    return counts


# 1. Redis ----------------------------------------------------------------------------


def test_each_redis_is_bounded_and_only_the_cache_evicts(stack):
    durable, cache = info(stack, "redis", "memory"), info(stack, "redis_cache", "memory")
    assert durable["maxmemory_policy"] == "noeviction" and int(durable["maxmemory"]) > 0, durable
    assert cache["maxmemory_policy"] == "allkeys-lru" and int(cache["maxmemory"]) > 0, cache
    # half of REDIS_MEMORY (512m), three quarters of REDIS_CACHE_MEMORY (256m)
    assert int(durable["maxmemory"]) == 256 * MIB and int(cache["maxmemory"]) == 192 * MIB


def test_gate_misses_cost_redis_nothing_and_its_endpoint_is_internal(stack):
    """Tens of thousands of anonymous requests for made-up gated paths: every one is
    nginx's 404 (the app is never asked), and neither Redis grows."""
    before = {name: (keys(stack, name), int(info(stack, name, "memory")["used_memory"]))
              for name in ("redis", "redis_cache")}  # fmt: skip
    misses = []
    for n in range(30_000):
        made_up = uuid.uuid4().hex
        misses.append(("/media/original/user/nobody/{0}.mp4",
                       "/media/encoded/{0}_240p.mp4",
                       "/media/hls/{0}/master.m3u8",
                       "/media/original/thumbnails/user/nobody/{0}.jpg")[n % 4].format(made_up))  # fmt: skip
    started = time.monotonic()
    counts = get_many(stack, misses)
    took = time.monotonic() - started
    assert counts == {404: len(misses)}, counts
    after = {name: (keys(stack, name), int(info(stack, name, "memory")["used_memory"]))
             for name in ("redis", "redis_cache")}  # fmt: skip
    print(
        f"\n{len(misses)} gate misses in {took:.1f}s; redis keys/used_memory before "
        f"{before}, after {after}"
    )
    for name in before:
        assert after[name][0] - before[name][0] < 50, (name, before, after)  # beat, sessions
        assert after[name][1] - before[name][1] < MIB, (name, before, after)

    # the gate's question, asked from outside: nginx's 404 in every spelling
    public = "/media/original/user/nobody/" + uuid.uuid4().hex + ".mp4"
    spellings = ["/api/v1/media-auth", "/api/v1/media-auth/", "/API/V1/MEDIA-AUTH",
                 "/Api/v1/Media-Auth", "//api/v1//media-auth", "/api//v1/media-auth",
                 "/api/v1/%6Dedia-auth", "/api/v1/media%2Dauth", "/%61pi/v1/media-auth",
                 "/api/v1/./media-auth", "/api/v1/media-auth?x=1", "/api/v1/media-auth;x",
                 "/api/v1/media-auth%3Fx", "/api/v1/MEDIA-auth/../media-auth"]  # fmt: skip
    refused_from_outside(stack, spellings, {"X-Original-URI": public})


def refused_from_outside(stack, spellings: list[str], headers: dict[str, str]) -> None:
    """Each spelling of an internal question, asked raw from outside: nginx's own 404 (or
    400 for a path it will not parse), never the app's answer."""
    for path in spellings:
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=15)
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{stack.port}", **headers})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert response.status in (400, 404), (path, response.status)
        assert response.status == 400 or NGINX_404 in body, (path, body[:200])


def test_a_full_cache_evicts_its_own_keys_never_a_session_or_a_queued_task(stack):
    cli = ("redis_cache", "redis")
    session = requests.Session()
    login = session.post(stack.url("/api/v1/login"), auth=("admin", stack.admin_password),
                         timeout=30)  # fmt: skip
    assert login.status_code == 200, login.text
    sessionid = session.cookies["sessionid"]
    # the session is kept on the Redis that never evicts, not in the cache
    found = {name: redis(stack, name, "-n", "1", "--scan", "--pattern", f"*{sessionid}")
             for name in cli}  # fmt: skip
    assert found["redis"] and not found["redis_cache"], found
    # a task queued where no worker takes it: kept as the broker keeps every queued task
    queue = f"e2e-parked-{uuid.uuid4().hex[:8]}"
    send = f"from cms.celery import app; app.send_task('files.tasks.heartbeat', queue={queue!r})"
    stack.dc("exec", "-T", "web", "python", "manage.py", "shell", "-c", send)
    assert redis(stack, "redis", "-n", "1", "LLEN", queue) == "1"

    maxmemory = redis(stack, "redis_cache", "CONFIG", "GET", "maxmemory").split()[-1]
    redis(stack, "redis_cache", "CONFIG", "SET", "maxmemory", str(16 * MIB))
    try:
        # 20,000 SETs of 4 KiB (80 MB offered to a 16 MB cache), one command each as the
        # app sends them (eviction runs before each command, not inside a script)
        value = b"x" * 4096
        commands = b"".join(
            b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$4096\r\n%s\r\n$2\r\nEX\r\n$3\r\n600\r\n"
            % (len(key), key, value)
            for key in (b"fill:%d" % i for i in range(20_000))
        )
        redis(stack, "redis_cache", "-n", "1", "--pipe", input=commands, text=False)
        memory = info(stack, "redis_cache", "memory")
        stats = info(stack, "redis_cache", "stats")
        print(
            f"\ncache after 80 MB offered: used_memory={memory['used_memory']} "
            f"maxmemory={memory['maxmemory']} evicted_keys={stats['evicted_keys']}"
        )
        assert int(stats["evicted_keys"]) > 10_000, stats["evicted_keys"]
        assert int(memory["used_memory"]) <= 17 * MIB, memory["used_memory"]
    finally:
        redis(stack, "redis_cache", "CONFIG", "SET", "maxmemory", maxmemory)
        redis(stack, "redis_cache", "-n", "1", "EVAL",
              "for _, k in ipairs(redis.call('KEYS', 'fill:*')) do redis.call('DEL', k) end", "0")  # fmt: skip
    # nothing was lost on the other Redis: the session logs in, the task is still queued
    assert int(info(stack, "redis", "stats")["evicted_keys"]) == 0
    assert redis(stack, "redis", "-n", "1", "LLEN", queue) == "1"
    redis(stack, "redis", "-n", "1", "DEL", queue)
    whoami = session.get(stack.url("/api/v1/whoami"), timeout=30)
    assert whoami.status_code == 200 and whoami.json()["username"] == "admin", whoami.text


# 2. Uploads --------------------------------------------------------------------------


UNAUTHORIZED, FORBIDDEN = "HTTP/1.1 401 Unauthorized", "HTTP/1.1 403 Forbidden"
TOO_LARGE = "HTTP/1.1 413 Request Entity Too Large"
#: A user the stand-in lets log in but not upload (its files.methods rule; MediaCMS's
#: are CAN_ADD_MEDIA and the per-user media limit, tried in acceptance).
MAKE_NO_UPLOADER = """
from django.contrib.auth.models import Group
from files.methods import NO_UPLOADS
from users.models import User
user = User.objects.create_user("{name}", password="{password}")
user.groups.add(Group.objects.get_or_create(name=NO_UPLOADS)[0])
"""


@pytest.fixture(scope="module")
def no_uploader(stack) -> tuple[str, str]:
    name, password = f"viewer-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    script = MAKE_NO_UPLOADER.format(name=name, password=password)
    stack.dc("exec", "-T", "web", "python", "manage.py", "shell", "-c", script)
    return name, password


#: MediaCMS routes "^replace_media": its other spellings reach the same view
@pytest.mark.parametrize("path", ["/api/v1/media", "/fu/upload/", "/replace_media?m=x",
                                  "/replace_media/", "/replace_mediaX?m=x"])  # fmt: skip
def test_gib_uploads_of_anyone_who_may_not_upload_are_refused_before_their_body(
    stack, path, no_uploader
):
    written = nginx_written(stack)
    cases = {
        "logged in, may not upload, 5 GiB": {"Content-Length": str(5 * GIB),
                                             "Authorization": basic(*no_uploader)},
        "anonymous, 5 GiB Content-Length": {"Content-Length": str(5 * GIB)},
        "anonymous, chunked": {"Transfer-Encoding": "chunked"},
        "wrong password, 5 GiB": {"Content-Length": str(5 * GIB),
                                  "Authorization": basic("admin", "not-the-password")},
        "anonymous, Expect: 100-continue": {"Content-Length": str(5 * GIB),
                                            "Expect": "100-continue"},
    }  # fmt: skip
    for what, headers in cases.items():
        status, took, sent = stream_until_answered(stack, path, headers, 5 * GIB)
        print(f"\n{path} {what}: {status!r} after {took:.2f}s, {sent / MIB:.0f} MiB sent")
        # a known user is refused as such; an unknown visitor as the app's whoami says;
        # a declared size beyond a Fine Uploader part before anyone is asked
        known = what.startswith("logged in")
        expected = {FORBIDDEN} if known else {UNAUTHORIZED, FORBIDDEN}
        if path == "/fu/upload/" and "Content-Length" in headers:
            expected = {TOO_LARGE}
        assert status in expected, (what, status)
        assert took < 10 and sent < 2 * GIB, (what, took, sent)
    grew = nginx_written(stack) - written
    print(f"nginx wrote {grew} bytes for {len(cases)} refused uploads to {path}")
    assert grew < 4 * MIB, grew
    left = stack.dc("exec", "-T", "nginx", "du", "-sk", "/var/cache/nginx/client-body").stdout
    assert int(left.split()[0]) < 1024, left  # KiB: no body file left behind either


def test_the_upload_question_is_never_asked_from_outside(stack):
    """/_stack/can-upload is nginx's own question before an upload: from outside, in every
    spelling and with a user's credentials, nginx's 404."""
    spellings = ["/_stack/can-upload", "/_stack/can-upload/", "/_STACK/can-upload",
                 "//_stack//can-upload", "/%5Fstack/can-upload", "/_stack/can%2Dupload",
                 "/_stack/./can-upload", "/_stack/can-upload?x=1",
                 "/x/../_stack/can-upload"]  # fmt: skip
    refused_from_outside(stack, spellings, {"Authorization": basic("admin", stack.admin_password)})


def test_a_logged_in_upload_still_works_and_is_spooled(stack):
    """The API upload with credentials passes nginx's question and reaches the app; its
    body is spooled to nginx's disk as before, so the measurement above sees writes."""
    written = nginx_written(stack)
    content = b"\0" * (20 * MIB)
    for attempt in (1, 2):
        response = requests.post(stack.url("/api/v1/media"),
                                 auth=("admin", stack.admin_password),
                                 data={"title": "logged-in upload", "state": "public"},
                                 files={"media_file": ("clip.mp4", content)}, timeout=120)  # fmt: skip
        if response.status_code != 503:
            break
        # the page that says "come back": an uploader does; why it was shown is printed
        problems = "\n".join(nginx_problems(stack, 10))
        print(f"\nattempt {attempt}: 503 {response.headers.get('Retry-After')}\n{problems}")
        time.sleep(2)
    assert response.status_code == 201, (response.text, nginx_problems(stack, 10))
    assert nginx_written(stack) - written >= 20 * MIB
    # a session (the web UI's uploader) passes nginx too: the test app has no /fu/upload/,
    # so the app's own 404, not nginx's refusal
    session = requests.Session()
    session.post(stack.url("/api/v1/login"), auth=("admin", stack.admin_password), timeout=30)
    answer = session.post(stack.url("/fu/upload/"), data=b"x" * MIB, timeout=60)
    assert answer.status_code in (403, 404) and b"nginx" not in answer.content, answer.text[:200]


def test_an_upload_that_would_fill_the_disk_is_refused_before_its_body(stack):
    """UPLOAD_DISK_RESERVE_MB above the free space of the volumes' disk (what a nearly full
    disk looks like): a logged-in upload gets the 503 page before its body is written, and
    nginx's log says why; the site and its database go on answering."""
    df = stack.dc("exec", "-T", "web", "df", "-Pm", "/home/mediacms.io/mediacms/media_files")
    free_mb = int(df.stdout.splitlines()[-1].split()[3])
    before = config.load(stack.home).get("UPLOAD_DISK_RESERVE_MB")
    config.update(config.load(stack.home), {"UPLOAD_DISK_RESERVE_MB": str(2 * free_mb + 1024)})
    stack.dc("up", "--detach", "--no-deps", "--wait", "web")
    try:
        written = nginx_written(stack)
        headers = {
            "Content-Length": str(GIB),
            "Authorization": basic("admin", stack.admin_password),
        }
        status, took, sent = stream_until_answered(stack, "/api/v1/media", headers, GIB)
        print(f"\nno room: {status!r} after {took:.2f}s, {sent / MIB:.0f} MiB sent")
        assert status.split()[1] == "503" and sent < GIB // 2, (status, sent)
        assert nginx_written(stack) - written < 4 * MIB
        assert any("507" in line for line in nginx_problems(stack, 20)), nginx_problems(stack, 20)
        assert requests.get(stack.url("/"), timeout=30).status_code == 200
    finally:
        config.update(config.load(stack.home), {"UPLOAD_DISK_RESERVE_MB": before})
        stack.dc("up", "--detach", "--no-deps", "--wait", "web")
    # room again: the same user's upload passes nginx (the app answers a form without file)
    again = requests.post(stack.url("/api/v1/media"), auth=("admin", stack.admin_password),
                          data={"title": "x"}, timeout=60)  # fmt: skip
    assert again.status_code == 400, again.text[:200]
