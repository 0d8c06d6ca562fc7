"""Attacks on the stack's edge (nginx in front of uWSGI), each against a running stack.

Private media behind the app's media-auth endpoint in every spelling of a URL; user
files that must never render on the site's origin; request size limits, bodies on
disk and slow clients; unknown host names and forged forwarding headers; dotfiles
and symlinks in the served folders. Requests go out as raw HTTP where the exact bytes
matter (no client-side normalisation of paths or headers).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import subprocess
import threading
import time
import uuid

import pytest
import requests
from conftest import access_log

from mediacms_stack.stack.config import ROOT
from mediacms_stack.stack.model import ImageNames
from tests.uploads import post_patiently

pytestmark = pytest.mark.e2e

PASSWORD = "edge-User-pw-1"
JPEG_HTML = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00<html><script>alert(document.cookie)</script>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"></svg>'


def raw(stack, path, *, method="GET", headers=None, body=None, port=None):
    """One request sent exactly as written; returns (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port or stack.port, timeout=15)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in {"Host": f"127.0.0.1:{stack.port}", **(headers or {})}.items():
            if value is not None:
                conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def in_volume(stack, script: str) -> None:
    """Run a shell script in a throwaway container (uid 33) with the media volume at /m."""
    image = ImageNames.from_settings(stack.settings).ref("nginx")
    subprocess.run(
        ["docker", "run", "--rm", "--user", "33:33", "--network", "none", "--entrypoint", "sh",
         "-v", f"{stack.settings.project}_media_files:/m", image, "-c", f"set -e; {script}"],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def logs(stack, service: str) -> str:
    return stack.dc("logs", "--no-log-prefix", service).stdout


@pytest.fixture(scope="module")
def people(stack):
    """alice owns the media, bob is another user; sessions (cookies) for them and admin."""
    create = (
        "from users.models import User\n"
        "for name in ('alice', 'bob'):\n"
        "    User.objects.filter(username=name).exists() or "
        f"User.objects.create_user(name, password={PASSWORD!r})\n"
    )
    stack.dc("exec", "-T", "web", "python", "manage.py", "shell", "-c", create)
    sessions = {"anonymous": requests.Session()}
    for name, password in (("alice", PASSWORD), ("bob", PASSWORD), ("admin", stack.admin_password)):
        session = requests.Session()
        login = session.post(stack.url("/api/v1/login"), auth=(name, password), timeout=10)
        assert login.status_code == 200 and "sessionid" in session.cookies, login.text
        sessions[name] = session
    return sessions


def upload(stack, name: str, content: bytes, state: str) -> dict:
    response = post_patiently(
        stack.url("/api/v1/media"), auth=("alice", PASSWORD), timeout=60,
        data={"title": name, "state": state}, files={"media_file": (name, content)},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def media(stack, people):
    """alice's private, unlisted and public media, plus encoded and HLS files of the
    private one written into the volume the way the workers would."""
    made = {state: upload(stack, f"{state}.mp4", f"{state} bytes".encode() * 100, state)
            for state in ("private", "unlisted", "public")}  # fmt: skip
    uid = made["private"]["uid"]
    in_volume(stack, f"mkdir -p /m/encoded /m/hls/{uid} /m/userlogos; "
                     f"echo encoded > /m/encoded/{uid}_240p.mp4; "
                     f"echo '#EXTM3U' > /m/hls/{uid}/master.m3u8; "
                     "echo logo > /m/userlogos/logo.png")  # fmt: skip
    made["paths"] = {
        "original": made["private"]["original_url"],
        "encoded": f"/media/encoded/{uid}_240p.mp4",
        "hls": f"/media/hls/{uid}/master.m3u8",
    }
    made["contents"] = {"original": b"private bytes" * 100, "encoded": b"encoded\n",
                        "hls": b"#EXTM3U\n"}  # fmt: skip
    return made


#: nginx's own page for a 403 (auth_request relays the app's 403, never its body)
REFUSED = b"<h1>403 Forbidden</h1>"


def assert_refused(status: int, body: bytes, content: bytes, what) -> None:
    """nginx's 403 page, with none of the private file: not its first four bytes, which
    any answer of it, whole or a range from 0, would hold."""
    assert status == 403, (what, status)
    assert REFUSED in body and content[:4] not in body, (what, body[:300])


# 1. Private media --------------------------------------------------------------------


def test_image_says_it_gates_media(stack):
    image = ImageNames.from_settings(stack.settings).ref("nginx")
    label = subprocess.run(
        ["docker", "image", "inspect", "--format",
         '{{ index .Config.Labels "io.mediacms.media-auth" }}', image],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert label == "on"  # tests/app has /api/v1/media-auth, like MediaCMS 8.3


@pytest.mark.parametrize(
    ("mode", "expected"), [("on", "result=503 "), ("off", "result=200 served")]
)
def test_media_modes_of_the_nginx_configuration(stack, mode, expected):
    """The image's configuration with either gate snippet, alone in a container whose
    "web" is nowhere: gated, a media file needs the app (the 503 page when it cannot be
    asked); without the gate (7.x trees) it is served as before."""
    image = ImageNames.from_settings(stack.settings).ref("nginx")
    snippet = ROOT / f"config/nginx/media-gate-{mode}.conf"
    script = (
        "mkdir -p /var/www/media/original && echo served > /var/www/media/original/a.mp4 && "
        "nginx-entrypoint nginx && sleep 1 && "
        "code=$(curl -sS -o /tmp/body -w '%{http_code}' -H 'Host: media.test' "
        "http://127.0.0.1:8080/media/original/a.mp4) && "
        'echo "result=$code $(cat /tmp/body)"'
    )
    done = subprocess.run(
        ["docker", "run", "--rm", "--add-host", "web:127.0.0.1", "-e", "FRONTEND_HOST=http://media.test",
         "-v", f"{snippet}:/etc/nginx/snippets/media-gate.conf:ro", "--entrypoint", "sh", image,
         "-c", script],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    results = [line for line in done.stdout.splitlines() if line.startswith("result=")]
    assert results and results[0].startswith(expected), done
    if mode == "on":
        assert "served" not in results[0] and 'subrequest: "/media/_auth"' in done.stderr, done


@pytest.mark.parametrize("kind", ["original", "encoded", "hls"])
def test_private_media_only_for_owner_and_admin(stack, people, media, kind):
    path, content = media["paths"][kind], media["contents"][kind]
    for who in ("anonymous", "bob", "alice", "admin"):
        response = people[who].get(stack.url(path), timeout=10)
        if who in ("alice", "admin"):
            assert response.status_code == 200, (who, path, response.status_code)
            assert response.content == content, (who, path)
        else:
            assert_refused(response.status_code, response.content, content, (who, path))
        assert "no-cache" in response.headers.get("Cache-Control", ""), response.headers
    ranged = people["alice"].get(stack.url(path), headers={"Range": "bytes=0-3"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == content[:4]
    anon_ranged = requests.get(stack.url(path), headers={"Range": "bytes=0-3"}, timeout=10)
    assert_refused(anon_ranged.status_code, anon_ranged.content, content, (path, "ranged"))


def test_public_and_unlisted_media_open_to_all(stack, media):
    for state in ("public", "unlisted"):
        response = requests.get(stack.url(media[state]["original_url"]), timeout=10)
        assert response.status_code == 200, state
        assert response.content == f"{state} bytes".encode() * 100
    # outside encoded/hls/original nothing is asked of the app
    assert requests.get(stack.url("/media/userlogos/logo.png"), timeout=10).status_code == 200


def spellings(path: str, public_uid: str) -> list[str]:
    rest = path.removeprefix("/media/")
    first, _, tail = rest.partition("/")
    return [
        f"/media//{rest}",
        f"//media/{rest}",
        f"/media/./{rest}",
        f"/media/{first}//{tail}",
        f"/media%2F{rest}",
        f"/media/{first}%2F{tail}",
        f"/media/{first}/{tail}".replace("/user/", "/user%2f"),
        f"/%6Dedia/{rest}",
        f"{path}?{public_uid}",
        f"{path}?x=/media/original/{public_uid}",
        f"{path}#{public_uid}",
    ]


def test_every_spelling_of_a_private_url_gets_the_same_answer(stack, people, media):
    path = media["paths"]["original"]
    owner_cookie = "sessionid=" + people["alice"].cookies["sessionid"]
    plain = raw(stack, path, headers={"Cookie": owner_cookie})
    assert plain[0] == 200 and plain[2] == media["contents"]["original"]
    for variant in spellings(path, media["public"]["uid"]):
        status, _, body = raw(stack, variant)
        assert_refused(status, body, plain[2], variant)
        status, _, body = raw(stack, variant, headers={"Cookie": owner_cookie})
        assert (status, body) == (200, plain[2]), (variant, status)


# 2. User files never render on the site's origin ---------------------------------------


def test_polyglot_and_svg_are_downloads_not_pages(stack, people):
    for name, content in (("x.html", JPEG_HTML), ("x.svg", SVG), ("x.xml", b"<?xml?><a/>"),
                          ("x.js", b"alert(1)")):  # fmt: skip
        item = upload(stack, name, content, "public")
        response = requests.get(stack.url(item["original_url"]), timeout=10)
        assert response.status_code == 200 and response.content == content, name
        headers = response.headers
        assert headers["X-Content-Type-Options"] == "nosniff", name
        assert headers["Content-Disposition"] == "attachment", name
        csp = headers["Content-Security-Policy"]
        assert csp.startswith("sandbox;") and "default-src 'none'" in csp, name
        assert "script-src" not in csp, name


def test_audio_video_images_inline_with_the_same_guards(stack, media):
    in_volume(stack, "printf '\\377\\330\\377' > /m/userlogos/pic.jpg; "
                     "echo x > /m/userlogos/clip.webm; echo x > /m/userlogos/page.html")  # fmt: skip
    for path in (media["public"]["original_url"], "/media/userlogos/pic.jpg",
                 "/media/userlogos/clip.webm"):  # fmt: skip
        response = requests.get(stack.url(path), timeout=10)
        assert response.status_code == 200, path
        assert "Content-Disposition" not in response.headers, path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["Content-Security-Policy"].startswith("sandbox;"), path
    page = requests.get(stack.url("/media/userlogos/page.html"), timeout=10)
    assert page.headers["Content-Disposition"] == "attachment"


def test_nosniff_on_static_app_and_errors(stack):
    for path in ("/static/css/app.css", "/", "/api/v1/config", "/no-such-page",
                 "/media/no-such-file"):  # fmt: skip
        status, headers, _ = raw(stack, path)
        assert headers.get_all("X-Content-Type-Options") == ["nosniff"], (path, status)


def test_static_files_kept_30_days_and_their_errors_never(stack):
    status, headers, _ = raw(stack, "/static/css/app.css")
    assert status == 200 and headers.get_all("Cache-Control") == ["max-age=2592000"], headers
    for path in ("/static/css/no-such.css", "/static/"):
        status, headers, _ = raw(stack, path)
        assert status in (403, 404) and "Cache-Control" not in headers, (path, status)


# 3. Request limits ---------------------------------------------------------------------


def refused_before_the_body(stack, path: str, length: int) -> bytes:
    """Send only the headers of a large POST: nginx must answer without reading it."""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\n"
                     f"Content-Type: application/octet-stream\r\n"
                     f"Content-Length: {length}\r\n\r\n".encode())  # fmt: skip
        return conn.recv(200)


def test_large_body_refused_outside_upload_endpoints(stack):
    marker = f"/big-{uuid.uuid4().hex}"
    assert refused_before_the_body(stack, marker, 11 * 2**20).startswith(b"HTTP/1.1 413")
    assert refused_before_the_body(stack, "/api/v1/config", 100 * 2**20).startswith(b"HTTP/1.1 413")
    assert marker not in logs(stack, "web")


def test_chunked_body_beyond_the_limit_refused(stack):
    marker = f"/chunked-{uuid.uuid4().hex}"
    chunk = b"x" * 2**20
    answer = b""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as conn:
        conn.sendall(f"POST {marker} HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())  # fmt: skip
        with contextlib.suppress(OSError):  # nginx may answer and close while we send
            for _ in range(14):  # 14 MiB at most, the limit is 10
                conn.sendall(b"100000\r\n" + chunk + b"\r\n")
        with contextlib.suppress(OSError):
            answer = conn.recv(200)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert marker not in logs(stack, "web")


def test_upload_endpoints_take_large_bodies(stack):
    big = b"x" * (12 * 2**20)
    # from a logged-in user nginx passes them on: the app answers (400 for a body that is
    # no form, 404 for the Fine Uploader path the test app lacks), never nginx's 413
    # (several times: uWSGI must drain a body the app refused unread, or nginx, still
    # sending it, would answer 502); anonymous ones nginx refuses itself
    # (test_redis_uploads.py: before reading their body)
    admin = {"Authorization": "Basic " + base64.b64encode(
        f"admin:{stack.admin_password}".encode()).decode()}  # fmt: skip
    for _ in range(3):
        assert raw(stack, "/api/v1/media", method="POST", body=big, headers=admin)[0] == 400
    assert raw(stack, "/fu/upload/", method="POST", body=big, headers=admin)[0] == 404
    # a Fine Uploader part is 2 MB: the chunk endpoint takes 32 MB at most, even logged in
    whole = b"x" * (40 * 2**20)
    assert raw(stack, "/fu/upload/", method="POST", body=whole, headers=admin)[0] == 413
    assert raw(stack, "/api/v1/media", method="POST", body=big)[0] == 403


def test_bodies_are_buffered_on_disk_before_the_app_sees_them(stack):
    mounts = stack.dc("exec", "-T", "nginx", "cat", "/proc/mounts").stdout
    cache = [line.split() for line in mounts.splitlines() if line.split()[1] == "/var/cache/nginx"]
    assert cache and cache[0][2] != "tmpfs", mounts
    marker = f"buffered-{uuid.uuid4().hex}"
    # nginx unlinks a body's temporary file once open: look for it among its open files
    open_bodies = (
        "for fd in /proc/[0-9]*/fd/*; do "
        'case $(readlink "$fd") in /var/cache/nginx/client-body/*) stat -L -c %s "$fd";; esac; '
        "done 2>/dev/null"
    )
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as conn:
        auth = base64.b64encode(f"admin:{stack.admin_password}".encode()).decode()
        head = (  # logged in: anonymous bodies are refused before nginx reads them
            f"POST /api/v1/media?{marker} HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\n"
            f"Authorization: Basic {auth}\r\nContent-Length: {200 * 2**20}\r\n\r\n"
        )
        conn.sendall(head.encode() + b"x" * 3 * 2**20)
        deadline = time.monotonic() + 20
        sizes: list[int] = []
        while time.monotonic() < deadline and not any(size > 2**20 for size in sizes):
            time.sleep(0.5)
            found = stack.dc("exec", "-T", "nginx", "sh", "-c", open_bodies, check=False)
            sizes = [int(size) for size in found.stdout.split()]
    assert any(size > 2**20 for size in sizes), f"no body file on /var/cache/nginx: {sizes}"
    assert marker not in logs(stack, "web")  # the app never saw the unfinished request


def test_one_client_holds_at_most_128_requests(stack):
    """A client that keeps 128 downloads open without reading them gets 429 for its next
    media or app request (nginx.conf's per-client limit); static files are not counted;
    once it lets go, it is served again."""
    big = "/media/userlogos/held.jpg"  # larger than every buffer on the way: never sent whole
    in_volume(stack, "mkdir -p /m/userlogos; head -c 67108864 /dev/zero > /m/userlogos/held.jpg")
    request = f"GET {big} HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\n\r\n".encode()
    held: list[socket.socket] = []
    try:
        for _ in range(128):
            conn = socket.socket()
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
            conn.settimeout(15)
            conn.connect(("127.0.0.1", stack.port))
            conn.sendall(request)
            held.append(conn)
        for conn in held:  # each answer has begun: nginx is sending it, the request counts
            assert conn.recv(12) == b"HTTP/1.1 200", "a held download was not answered"
        for path in (big, "/media/original/user/x/none.mp4", "/", "/api/v1/config"):
            assert raw(stack, path)[0] == 429, path
        status, _, body = raw(stack, "/static/css/app.css")
        assert status == 200 and body, status
    finally:
        for conn in held:
            conn.close()
        held_at = time.monotonic()
        in_volume(stack, "rm -f /m/userlogos/held.jpg")  # passed or not: 64 MiB less to back up
    status = 429
    while status == 429 and time.monotonic() - held_at < 15:
        time.sleep(0.2)
        status = raw(stack, "/", headers={"Connection": "close"})[0]
    assert status == 200, status


def test_slow_bodies_do_not_starve_the_app(stack, people):
    env = stack.settings
    workers = int(env.get("UWSGI_PROCESSES", "2")) * int(env.get("UWSGI_THREADS", "2"))
    slow = [socket.create_connection(("127.0.0.1", stack.port), timeout=10)
            for _ in range(workers + 4)]  # fmt: skip
    stop = threading.Event()
    # logged in (anonymous bodies are refused at once), by session: HTTP Basic would make
    # each upload's login check hash the password, which is not what this test measures
    cookie = f"sessionid={people['admin'].cookies['sessionid']}"

    def trickle():
        for conn in slow:
            conn.sendall(f"POST /api/v1/media HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\n"
                         f"Cookie: {cookie}\r\n"
                         "Content-Length: 1000\r\n\r\n".encode())  # fmt: skip
        while not stop.wait(2):  # one byte every 2 s on each connection
            for conn in slow:
                conn.sendall(b"x")

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        time.sleep(3)  # every slow body is under way
        for _ in range(4):
            started = time.monotonic()
            response = requests.get(stack.url("/"), timeout=5)
            took = time.monotonic() - started
            assert response.status_code == 200 and took < 2, took
            time.sleep(1)
    finally:
        stop.set()
        sender.join(timeout=5)
        for conn in slow:
            conn.close()


# 4. Host names and forwarding headers ----------------------------------------------------


def test_unknown_host_refused_by_nginx(stack):
    marker = f"/host-{uuid.uuid4().hex}"
    for host in ("evil.example", "localhost", f"evil.example:{stack.port}", "127.0.0.1.evil"):
        status, _, body = raw(stack, marker, headers={"Host": host})
        assert status == 400 and b"unknown host" in body, host
    status, _, _ = raw(stack, marker, headers={"Host": None})  # HTTP/1.1 without a Host
    assert status == 400
    assert marker not in logs(stack, "web")
    assert raw(stack, "/api/v1/config")[0] == 200  # FRONTEND_HOST's name still works


def test_health_checks_from_inside_only(stack):
    inside = stack.dc("exec", "-T", "nginx", "curl", "-fsS", "http://127.0.0.1:8080/nginx-health")
    assert inside.stdout == "ok\n"
    assert raw(stack, "/nginx-health")[0] == 403
    assert raw(stack, "/nginx-health", headers={"Host": "evil.example"})[0] == 403
    container = stack.dc("ps", "--quiet", "nginx").stdout.strip()
    health = subprocess.run(["docker", "inspect", "--format", "{{.State.Health.Status}}", container],
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert health == "healthy"


def test_names_come_from_the_environment_at_start(stack):
    image = ImageNames.from_settings(stack.settings).ref("nginx")

    def render(**env):
        flags = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        return subprocess.run(
            ["docker", "run", "--rm", "--network", "none", *flags, image,
             "cat", "/tmp/nginx/server-names.conf"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    done = render(
        FRONTEND_HOST="https://Media.example.org:8443/", ALLOWED_HOSTS=".example.net, b.test"
    )
    assert done.returncode == 0 and done.stdout.endswith(
        "server_name Media.example.org .example.net b.test;\n"
    ), done
    for bad in ({"FRONTEND_HOST": "http://x;}server{"}, {"ALLOWED_HOSTS": "*"},
                {"ALLOWED_HOSTS": "a.test,b test{"}):  # fmt: skip
        done = render(**bad)
        assert done.returncode != 0 and "is not a host name" in done.stderr, bad


def request_info(stack, headers):
    status, _, body = raw(stack, "/api/v1/request-info", headers=headers)
    assert status == 200, body
    return json.loads(body)


FORGED = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Real-IP": "203.0.113.8",
    "Forwarded": "for=203.0.113.9;proto=https",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "443",
}


def test_forwarding_headers_ignored_on_the_published_port(stack):
    info = request_info(stack, {**FORGED, "User-Agent": "forged-probe"})
    meta = info["meta"]
    assert info["is_secure"] is False
    assert meta["HTTP_X_FORWARDED_PROTO"] == "http"
    assert not meta["REMOTE_ADDR"].startswith("203.0.113.")
    assert meta["HTTP_X_FORWARDED_FOR"] == meta["HTTP_X_REAL_IP"] == meta["REMOTE_ADDR"]
    assert not meta["HTTP_FORWARDED"] and not meta["HTTP_X_FORWARDED_HOST"]
    assert meta["HTTP_HOST"] == f"127.0.0.1:{stack.port}"
    access = access_log(stack, "forged-probe")
    assert access and access[-1].startswith(meta["REMOTE_ADDR"] + " "), access
    web = [line for line in logs(stack, "web").splitlines() if "/api/v1/request-info" in line]
    assert web and "203.0.113." not in "\n".join(web), web


def test_no_listener_believes_a_peer_by_default(stack):
    """Without TRUSTED_PROXIES no listener of nginx believes a forwarding header, from
    inside its own network either (there was a proxy listener, 8081, for the HTTPS
    overlay's Caddy: gone with it), and 8080 is its only port."""
    curl = ["curl", "-sS", "-H", f"Host: 127.0.0.1:{stack.port}",
            "-H", "X-Forwarded-For: 198.51.100.1, 203.0.113.5", "-H", "X-Forwarded-Proto: https",
            "http://127.0.0.1:8080/api/v1/request-info"]  # fmt: skip
    info = json.loads(stack.dc("exec", "-T", "nginx", *curl).stdout)
    assert info["meta"]["REMOTE_ADDR"] == "127.0.0.1" and info["is_secure"] is False, info
    refused = stack.dc("exec", "-T", "nginx", "curl", "-sS", "http://127.0.0.1:8081/", check=False)
    assert refused.returncode == 7, refused  # curl: could not connect
    container = stack.dc("ps", "--quiet", "nginx").stdout.strip()
    ports = json.loads(
        subprocess.run(["docker", "inspect", "--format", "{{json .NetworkSettings.Ports}}", container],
                       capture_output=True, text=True, check=True).stdout
    )  # fmt: skip
    assert list(ports) == ["8080/tcp"], ports


def test_trusted_proxies_from_the_environment_at_start(stack):
    """TRUSTED_PROXIES becomes nginx's list of believed peers; anything that is not an
    address or a network stops the container with one clear line."""
    image = ImageNames.from_settings(stack.settings).ref("nginx")

    def render(value):
        return subprocess.run(
            ["docker", "run", "--rm", "--network", "none", "-e", f"TRUSTED_PROXIES={value}",
             image, "cat", "/tmp/nginx/trusted-proxies.conf"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    done = render("10.0.0.0/8, 192.0.2.7,2001:db8::/32")
    assert done.returncode == 0 and done.stdout == "10.0.0.0/8 1;\n192.0.2.7 1;\n2001:db8::/32 1;\n"
    assert render("").stdout == ""
    for bad in ("10.0.0.0/8;} server {", "all", "1.2.3.4/8/8", "/8", "10.0.0.0/"):
        done = render(bad)
        assert done.returncode != 0 and "is not an address or a network" in done.stderr, bad


@contextlib.contextmanager
def nginx_trusting(stack, proxies: str):
    """The stack's nginx recreated with TRUSTED_PROXIES=proxies, and as it was afterwards."""
    env = stack.home / ".env"
    before = env.read_text()
    env.write_text(before + f"\nTRUSTED_PROXIES={proxies}\n")
    try:
        stack.dc("up", "--detach", "--no-deps", "--wait", "nginx")
        yield
    finally:
        env.write_text(before)
        stack.dc("up", "--detach", "--no-deps", "--wait", "nginx")


def test_a_trusted_load_balancer_names_the_visitor_and_no_one_else_can(stack):
    """Behind a load balancer named in TRUSTED_PROXIES, the visitor's address is the last
    one the balancer appended to X-Forwarded-For (what the client wrote before it is not
    believed) and its X-Forwarded-Proto counts; a peer that is not named is ignored as
    before, on the same nginx."""
    peer = request_info(stack, {})["meta"]["REMOTE_ADDR"]  # how this test's requests arrive
    chain = {"X-Forwarded-For": "198.51.100.1, 203.0.113.5", "X-Forwarded-Proto": "https",
             "User-Agent": "balanced-probe"}  # fmt: skip
    with nginx_trusting(stack, f"192.0.2.0/24, {peer}"):
        info = request_info(stack, chain)
        assert info["meta"]["REMOTE_ADDR"] == info["meta"]["HTTP_X_FORWARDED_FOR"] == "203.0.113.5"
        assert info["is_secure"] is True
        access = access_log(stack, "balanced-probe")
        assert access and access[-1].startswith("203.0.113.5 "), access
        # nginx's own loopback is not a named balancer: its header is the client's word
        curl = ["curl", "-fsS", "-H", f"Host: 127.0.0.1:{stack.port}", "-H",
                "X-Forwarded-For: 203.0.113.5", "-H", "X-Forwarded-Proto: https",
                "http://127.0.0.1:8080/api/v1/request-info"]  # fmt: skip
        inside = json.loads(stack.dc("exec", "-T", "nginx", *curl).stdout)
        assert inside["meta"]["REMOTE_ADDR"] == "127.0.0.1" and inside["is_secure"] is False
    info = request_info(stack, chain)  # the list is gone with the setting
    assert info["meta"]["REMOTE_ADDR"] == peer and info["is_secure"] is False


# 5. Dotfiles and symlinks ----------------------------------------------------------------


def test_dotfiles_never_served(stack, media):
    static = stack.home / "custom" / "static"
    static.mkdir(parents=True, exist_ok=True)
    (static / ".env").write_text("SECRET_KEY=leaked\n")
    in_volume(stack, "echo leaked > /m/.x; mkdir -p /m/.git; echo leaked > /m/.git/config; "
                     "echo leaked > /m/userlogos/.hidden")  # fmt: skip
    marker = uuid.uuid4().hex
    for path in ("/custom/static/.env", "/custom/static/%2eenv", "/media/.x", "/media/.git/config",
                 "/media/userlogos/.hidden", "/media//userlogos/./.hidden", "/static/.x",
                 f"/.env?{marker}", f"/api/.git/{marker}"):  # fmt: skip
        status, _, body = raw(stack, path)
        assert status in (403, 404) and b"leaked" not in body, (path, status)
    assert marker not in logs(stack, "web")


def test_uploads_in_progress_never_served(stack, media):
    """Chunks and assembled uploads belong to whoever is uploading: not to the public,
    not to another user, however the path is spelled; finished media still are."""
    in_volume(stack, "mkdir -p /m/chunks/abc /m/uploads && echo leaked > /m/chunks/abc/0 "
                     "&& echo leaked > /m/uploads/clip.mp4")  # fmt: skip
    try:
        for path in ("/media/chunks/abc/0", "/media/uploads/clip.mp4", "/media//chunks/abc/0",
                     "/media/./uploads/clip.mp4", "/media/%63hunks/abc/0", "/media/chunks/",
                     "/media/uploads/"):  # fmt: skip
            status, _, body = raw(stack, path)
            assert status == 404 and b"leaked" not in body, (path, status)
        public = requests.get(stack.url(media["public"]["original_url"]), timeout=10)
        assert public.status_code == 200 and public.content == b"public bytes" * 100
    finally:  # the session's later backups and restores compare the volume
        in_volume(stack, "rm -rf /m/chunks/abc /m/uploads/clip.mp4")


def test_symlinks_in_the_media_volume_not_followed(stack, people, media):
    uid = media["public"]["uid"]
    # the last one is a folder at the volume's top: nginx checks names from there on
    links = ["userlogos/passwd.png", "userlogos/etc", f"original/user/alice/{uid}.passwd.mp4",
             "etc"]  # fmt: skip
    in_volume(stack, f"ln -sf /etc/passwd /m/{links[0]}; ln -sfn /etc /m/{links[1]}; "
                     f"ln -sf /etc/passwd /m/{links[2]}; ln -sfn /etc /m/{links[3]}")  # fmt: skip
    try:
        for path in ("/media/userlogos/passwd.png", "/media/userlogos/etc/passwd",
                     f"/media/original/user/alice/{uid}.passwd.mp4", "/media/etc/passwd",
                     "/media//etc/passwd", "/media/%65tc/passwd"):  # fmt: skip
            response = people["admin"].get(stack.url(path), timeout=10)
            assert response.status_code in (403, 404) and b"root:" not in response.content, path
    finally:  # the session's later backups must not carry them (restores refuse links)
        in_volume(stack, "rm -f " + " ".join(f"/m/{link}" for link in links))


def test_a_backup_refuses_links_in_the_media_volume_and_names_them(stack, tmp_path):
    """A backup never holds what its restore refuses: a link in the media volume stops it
    before anything is written, and the message names the link and its target."""
    link = "userlogos/backup-probe.png"
    in_volume(stack, f"mkdir -p /m/userlogos && ln -sf /etc/passwd /m/{link}")
    try:
        done = stack.invoke("backup", "--dest", str(tmp_path), check=False)
    finally:
        in_volume(stack, f"rm -f /m/{link}")
    said = done.stdout + done.stderr
    assert done.returncode != 0 and "refused, no file written" in said, said
    assert f"./{link} (l, " in said and "/etc/passwd" in said, said
    assert list(tmp_path.iterdir()) == []  # no backup folder, no partial file
