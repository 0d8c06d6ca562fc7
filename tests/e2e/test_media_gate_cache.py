"""Attacks on the media gate's cache: nginx keeps the app's answer to "may this visitor see
this media item?" MEDIA_GATE_CACHE_SECONDS (config/nginx/media-gate-on.conf).

One viewer's decision never serves another (two users, forged cookies, crafted paths and
headers); revocation (logout, password change, media made private while it is watched)
is in force within the lifetime, measured; the app's errors are never kept; 0 turns the
cache off. How often the app was asked is read from the web container's request log.
"""

from __future__ import annotations

import base64
import subprocess
import time

import pytest
import requests

from mediacms_stack.stack import config
from mediacms_stack.stack.model import ImageNames
from tests.e2e.test_redis_uploads import NGINX_404, refused_from_outside
from tests.e2e.test_security_edge import PASSWORD, REFUSED, in_volume, logs, raw, upload

pytestmark = pytest.mark.e2e

QUESTION = "GET /api/v1/media-auth"


def lifetime(stack) -> float:
    return float(stack.settings.get("MEDIA_GATE_CACHE_SECONDS", "10"))


def questions(stack, at_least: int = 0) -> int:
    """How many times the app has been asked so far; first waits (5 s at most) until the
    log shows ``at_least`` of them, then a moment more for any late line."""
    deadline = time.monotonic() + 5
    count = logs(stack, "web").count(QUESTION)
    while count < at_least and time.monotonic() < deadline:
        time.sleep(0.2)
        count = logs(stack, "web").count(QUESTION)
    time.sleep(0.5)
    return logs(stack, "web").count(QUESTION)


def shell(stack, script: str) -> None:
    stack.dc("exec", "-T", "web", "python", "manage.py", "shell", "-c", script)


def login(stack, name: str, password: str = PASSWORD) -> str:
    """A new session of ``name``: its Cookie header."""
    response = requests.post(stack.url("/api/v1/login"), auth=(name, password), timeout=10)
    assert response.status_code == 200, response.text
    return f"sessionid={response.cookies['sessionid']}"


def get(stack, path: str, cookie: str | None = None, **headers: str) -> tuple[int, bytes]:
    status, _, body = raw(stack, path, headers={"Cookie": cookie, **headers})
    return status, body


def refused(answer: tuple[int, bytes], content: bytes, what) -> None:
    status, body = answer
    assert status == 403 and REFUSED in body and content[:4] not in body, (what, status, body[:200])


def until_refused(stack, path: str, cookie: str | None, started: float, limit: float) -> float:
    """Ask every 0.25 s until the gate refuses (``limit`` seconds at most); seconds since
    ``started`` when it did. Once refused, it stays refused."""
    while True:
        status, _ = get(stack, path, cookie)
        took = time.monotonic() - started
        if status == 403:
            break
        assert status == 200 and took < limit, (path, status, took)
        time.sleep(0.25)
    for _ in range(3):
        assert get(stack, path, cookie)[0] == 403, path
    return took


def change_while_watched(stack, script: str, viewers: list[tuple[str, str | None]]) -> float:
    """Run ``script`` in the app's Django shell while each viewer (path, cookie) keeps
    fetching its file, so that the gate holds a fresh decision when the change lands;
    returns the moment the change was done. (The shell takes seconds to start, longer
    than the lifetime on a busy machine: decisions kept before it would be gone.)"""
    argv = stack.compose.argv("exec", "-T", "web", "python", "manage.py", "shell", "-c", script)
    change = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while change.poll() is None and time.monotonic() < deadline:
        for path, cookie in viewers:
            get(stack, path, cookie)
        time.sleep(0.25)
    if change.poll() is None:
        change.kill()
    _, errors = change.communicate(timeout=30)
    assert change.returncode == 0, errors
    return time.monotonic()


@pytest.fixture(scope="module")
def people(stack):
    """alice owns the media, bob and carol (staff: sees every private media) do not."""
    create = (
        "from users.models import User\n"
        "for name in ('alice', 'bob', 'carol'):\n"
        "    User.objects.filter(username=name).exists() or "
        f"User.objects.create_user(name, password={PASSWORD!r})\n"
        "User.objects.filter(username='carol').update(is_staff=True)\n"
    )
    shell(stack, create)
    return {name: login(stack, name) for name in ("alice", "bob")}


@pytest.fixture(scope="module")
def media(stack, people):
    """alice's private and public media, each with an encoded file and two HLS segments,
    and a file under the private media's HLS folder that names the public uid after it."""
    made = {state: upload(stack, f"gate-{state}.mp4", f"{state} gate bytes".encode() * 100, state)
            for state in ("private", "public")}  # fmt: skip
    mine, other = made["private"]["uid"], made["public"]["uid"]
    script = "; ".join(
        f"mkdir -p /m/encoded /m/hls/{uid}; echo {state}-encoded > /m/encoded/{uid}_240p.mp4; "
        f"echo {state}-seg0 > /m/hls/{uid}/seg-0.ts; echo {state}-seg1 > /m/hls/{uid}/seg-1.ts"
        for state, uid in (("private", mine), ("public", other))
    )
    in_volume(stack, f"{script}; echo private-two-uids > /m/hls/{mine}/{other}.ts")
    for state, uid in (("private", mine), ("public", other)):
        made[state]["files"] = {
            made[state]["original_url"]: f"{state} gate bytes".encode() * 100,
            f"/media/encoded/{uid}_240p.mp4": f"{state}-encoded\n".encode(),
            f"/media/hls/{uid}/seg-0.ts": f"{state}-seg0\n".encode(),
            f"/media/hls/{uid}/seg-1.ts": f"{state}-seg1\n".encode(),
        }
    made["two_uids"] = f"/media/hls/{mine}/{other}.ts"
    return made


def state_script(uid: str, state: str) -> str:
    """As the owner's edit form does: the model's save()."""
    return (f"from files.models import Media; m = Media.objects.get(uid='{uid}'); "
            f"m.state = '{state}'; m.save()")  # fmt: skip


def test_repeated_requests_are_answered_by_nginx(stack, people, media):
    """A viewer asks the app once per media item (every file of it), an anonymous visitor
    once per file; the decisions sit in the /tmp tmpfs, one key per viewer and item."""
    before = questions(stack)
    cookie = login(stack, "alice")
    for _ in range(3):
        for path, content in media["private"]["files"].items():
            assert get(stack, path, cookie) == (200, content), path
    public = next(iter(media["public"]["files"].items()))
    for _ in range(5):
        assert get(stack, public[0]) == (200, public[1])
    assert questions(stack, before + 2) == before + 2  # alice's item, the anonymous file
    mounts = stack.dc("exec", "-T", "nginx", "cat", "/proc/mounts").stdout.splitlines()
    assert any(line.split()[1:3] == ["/tmp", "tmpfs"] for line in mounts), mounts
    keys = stack.dc("exec", "-T", "nginx", "sh", "-c",
                    "grep -ah '^KEY: ' -A2 -r /tmp/nginx/media-gate").stdout  # fmt: skip
    # the parts of a key are separated by real line breaks: cookie, authorization, item
    assert f"KEY: {cookie}\n\nuid {media['private']['uid']}\n" in keys, keys
    assert f"KEY: \n\npath {public[0]}\n" in keys, keys


def test_another_viewer_never_gets_the_owners_decision(stack, people, media):
    """alice's allowed requests are kept; right after them, bob, anonymous visitors and
    forged cookies get nothing of the private media, ranges included."""
    alice = login(stack, "alice")
    value = alice.removeprefix("sessionid=")
    # her key with its last character changed (to "x", or "y" when it is an "x" already:
    # one session key in 36 ends so, and "forging" it gave her own key, rightly served)
    last = "y" if value.endswith("x") else "x"
    forged = [None, people["bob"], "sessionid=forged", f"sessionid={value[:-1]}{last}",
              f"other={value}", f"{people['bob']}; other={value}", f"sessionid={value.upper()}"]  # fmt: skip
    for path, content in media["private"]["files"].items():
        assert get(stack, path, alice) == (200, content), path
        for cookie in forged:
            refused(get(stack, path, cookie), content, (path, cookie))
            refused(get(stack, path, cookie, Range="bytes=0-3"), content, (path, cookie, "range"))
        basic = "Basic " + base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
        refused(get(stack, path, None, Authorization=basic), content, (path, "basic"))


def test_crafted_paths_and_headers_do_not_poison_the_cache(stack, people, media):
    """The owner's allowed spelling of a URL, or a public file asked with a private path in
    a header or query, never opens the private file to anyone else; nginx finds the same
    media item in a path as the app does (the first uid in it)."""
    private_path, content = next(iter(media["private"]["files"].items()))
    public_path = media["public"]["original_url"]
    private_uid, public_uid = media["private"]["uid"], media["public"]["uid"]
    rest = private_path.removeprefix("/media/")
    spellings = [private_path, f"/media//{rest}", f"/media/./{rest}", f"/media%2F{rest}",
                 f"/%6Dedia/{rest}", f"{private_path}?{public_uid}", f"{private_path}?a=1",
                 f"/media/x/../{rest}"]  # fmt: skip
    alice = login(stack, "alice")
    for spelling in spellings:
        assert get(stack, spelling, alice)[0] in (200, 400), spelling  # ".." is nginx's 400
        for cookie in (None, people["bob"]):
            status, body = get(stack, spelling, cookie)
            assert status in (400, 403) and content[:4] not in body, (spelling, cookie, status)
    # a public file asked for with the private one in X-Original-URI and in its query,
    # then the private file: refused
    for cookie in (None, people["bob"]):
        for headers in ({"X-Original-URI": private_path}, {"X-Original-Uri": f"{private_path}?"}):
            assert get(stack, f"{public_path}?{private_uid}", cookie, **headers)[0] == 200
        refused(get(stack, private_path, cookie, **{"X-Original-URI": public_path}), content,
                (cookie, "header"))  # fmt: skip
        refused(get(stack, f"{private_path}?{public_path}", cookie), content, (cookie, "query"))
    # bob is allowed the public item; a file whose path names the private uid first and
    # the public one after it is the private item, for the app and for the cache
    for path in (public_path, f"/media/hls/{public_uid}/seg-0.ts"):
        assert get(stack, path, people["bob"])[0] == 200
    refused(get(stack, media["two_uids"], people["bob"]), b"private-two", "two uids")
    assert get(stack, media["two_uids"], alice) == (200, b"private-two-uids\n")


def test_logout_is_in_force_within_the_lifetime(stack, people, media):
    path, content = next(iter(media["private"]["files"].items()))
    cookie = login(stack, "alice")
    assert get(stack, path, cookie) == (200, content)
    kept = time.monotonic()
    done = requests.post(stack.url("/api/v1/logout"), headers={"Cookie": cookie}, timeout=10)
    assert done.status_code == 204
    out = time.monotonic()
    took = until_refused(stack, path, cookie, out, lifetime(stack) + 3)
    print(f"\nlogout: refused {took:.1f} s after it ({took + out - kept:.1f} s after the "
          f"decision was kept; lifetime {lifetime(stack):.0f} s)")  # fmt: skip
    assert took + out - kept <= lifetime(stack) + 1.5


def test_password_change_is_in_force_within_the_lifetime(stack, people, media):
    """carol (staff) sees alice's private media; her password changes elsewhere: her old
    session is refused within the lifetime (Django no longer accepts it)."""
    path, content = next(iter(media["private"]["files"].items()))
    cookie = login(stack, "carol")
    assert get(stack, path, cookie) == (200, content)
    script = ("from users.models import User; u = User.objects.get(username='carol'); "
              "u.set_password('carol-New-pw-2'); u.save()")  # fmt: skip
    changed = change_while_watched(stack, script, [(path, cookie)])
    took = until_refused(stack, path, cookie, changed, lifetime(stack) + 3)
    print(f"\npassword change: refused {took:.1f} s after it (lifetime {lifetime(stack):.0f} s)")
    assert took <= lifetime(stack) + 1.5


def test_media_made_private_while_watched(stack, people, media):
    """bob and an anonymous visitor play the public media, segment after segment; it is
    made private: both are refused within the lifetime, the owner keeps it throughout."""
    item = media["public"]
    files = list(item["files"].items())
    alice = login(stack, "alice")
    for cookie in (None, people["bob"], alice):
        for path, content in files:
            assert get(stack, path, cookie) == (200, content), (path, cookie)
    viewers = [(path, cookie) for path, _ in files for cookie in (None, people["bob"])]
    try:
        made = change_while_watched(stack, state_script(item["uid"], "private"), viewers)
        # anonymous decisions are per file, each kept from its own first request
        took = {(path, cookie): until_refused(stack, path, cookie, made, lifetime(stack) + 3)
                for path, cookie in viewers}  # fmt: skip
        print(f"\nmade private: every file refused to anonymous and bob within "
              f"{max(took.values()):.1f} s; lifetime {lifetime(stack):.0f} s")  # fmt: skip
        assert max(took.values()) <= lifetime(stack) + 1.5, took
        for path, content in files:
            for cookie in (None, people["bob"]):
                refused(get(stack, path, cookie), content, (path, cookie))
            assert get(stack, path, alice) == (200, content), path
    finally:
        shell(stack, state_script(item["uid"], "public"))


def test_files_are_served_as_they_are_now(stack, people, media):
    """The gate's check that a file exists keeps descriptors open (10 s), never the file
    it serves: a file rewritten in place is served whole at its new length, a new one is
    found at once, a removed one is nginx's 404 (or 403 for those refused, until the
    check knows it is gone); a made-up file is never a question to the app, even in a
    media item the viewer may see; the gate's internal locations are nginx's 404 from
    outside."""
    alice, uid = login(stack, "alice"), media["private"]["uid"]
    path, name = f"/media/hls/{uid}/seg-9.ts", f"/m/hls/{uid}/seg-9.ts"
    assert get(stack, path, alice)[0] == 404  # asked before it exists
    in_volume(stack, f"printf 'first version, the longer one' > {name}")
    assert get(stack, path, alice) == (200, b"first version, the longer one")
    # rewritten in place (">" keeps the file, truncates it): shorter, then longer
    for content in (b"shorter", b"longer than the first version " * 50):
        in_volume(stack, f"printf '{content.decode()}' > {name}")
        assert get(stack, path, alice) == (200, content)
        status, body = get(stack, path, alice, Range="bytes=0-3")
        assert (status, body) == (206, content[:4])
    in_volume(stack, f"rm {name}")
    status, body = get(stack, path, alice)
    assert status == 404 and NGINX_404 in body, (status, body[:200])
    for cookie in (None, people["bob"]):  # refused until the gate knows it is gone (10 s)
        status, body = get(stack, path, cookie)
        assert status in (403, 404) and b"version" not in body, (cookie, status, body[:200])
    asked = questions(stack)
    for made_up in (f"/media/hls/{uid}/nothing.ts", f"/media/encoded/{uid}_9999p.mp4"):
        assert get(stack, made_up, alice)[0] == 404, made_up
    assert questions(stack) == asked  # no file: the app is never asked
    refused_from_outside(stack, ["/media/_auth", "/media/_refused", "/media/_refused?x=1",
                                 "/media//_refused", "/media/%5Frefused"], {})  # fmt: skip


def test_app_errors_are_never_kept(stack, people, media):
    """The database refuses the app: the gate cannot decide, the visitor gets the 503
    page and nothing is kept; as soon as the database is back, the same viewer's next
    request asks again and is served (well within the lifetime a kept 500 would have
    had)."""
    path, content = next(iter(media["private"]["files"].items()))
    cookie = login(stack, "alice")
    role = stack.settings.get("POSTGRES_USER", "mediacms")
    database = stack.settings.get("POSTGRES_DB", "mediacms")
    superuser = stack.settings.get("POSTGRES_SUPERUSER", "postgres")

    def sql(statement: str) -> None:
        stack.dc("exec", "-T", "db", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", superuser,
                 "-d", database, "-c", statement)  # fmt: skip

    before = questions(stack)
    sql(f'ALTER ROLE "{role}" NOLOGIN')
    try:
        # the role's name is the stack's own setting, not input
        sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")  # noqa: S608
        failed = time.monotonic()
        status, headers, body = raw(stack, path, headers={"Cookie": cookie})
        assert status == 503 and content[:4] not in body, status
        assert headers.get("Retry-After") == "30", dict(headers)
    finally:
        sql(f'ALTER ROLE "{role}" LOGIN')
    assert get(stack, path, cookie) == (200, content)
    assert time.monotonic() - failed < lifetime(stack) - 1
    assert questions(stack, before + 2) == before + 2  # asked again, not answered from cache


def test_lifetime_setting_checked_at_start(stack):
    image = ImageNames.from_settings(stack.settings).ref("nginx")

    def start(value: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", "run", "--rm", "--network", "none", "-e", f"MEDIA_GATE_CACHE_SECONDS={value}",
             image, "cat", "/tmp/nginx/media-gate-cache.conf"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    assert start("25").stdout == "uwsgi_cache media_gate; uwsgi_cache_valid 200 204 401 403 25s;\n"
    assert start("0").stdout == "uwsgi_cache off;\n"
    for bad in ("-1", "301", "1000", "1e3", "10s", "10;", " 5", "abc"):
        done = start(bad)
        assert done.returncode != 0 and "MEDIA_GATE_CACHE_SECONDS" in done.stderr, (bad, done)
        assert "not a whole number of seconds from 0 to 300" in done.stderr, bad


def test_zero_asks_the_app_every_time(stack, people, media):
    """MEDIA_GATE_CACHE_SECONDS=0 in .env, nginx recreated: every request is a question."""
    path = next(iter(media["private"]["files"]))
    kept = stack.settings.get("MEDIA_GATE_CACHE_SECONDS", "10")
    config.update(stack.settings, {"MEDIA_GATE_CACHE_SECONDS": "0"})
    try:
        stack.dc("up", "--detach", "--wait", "nginx")
        before = questions(stack)
        for _ in range(4):
            assert get(stack, path, people["bob"])[0] == 403
            assert get(stack, path, None)[0] == 403
        assert questions(stack, before + 8) == before + 8
    finally:
        config.update(stack.settings, {"MEDIA_GATE_CACHE_SECONDS": kept})
        stack.dc("up", "--detach", "--wait", "nginx")
    before = questions(stack)
    for _ in range(4):
        assert get(stack, path, people["bob"])[0] == 403
    assert questions(stack, before + 1) == before + 1
