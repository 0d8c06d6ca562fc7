"""The HTTPS overlay end to end: the acme service (Caddy) obtains a certificate from
Pebble over ACME (a real HTTP-01 validation, through nginx on the held port 80) and
nginx serves the app with it on the held port 443.

Every request trusts Pebble's issuing root only; the tests run in file order (the
restart check comes soon after the issuance, the renewal check within the first
certificate's lifetime, the long download last).
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor

import https_stack
import pytest
from conftest import access_log
from cryptography import x509
from https_stack import NAME, OTHER_NAME, VALIDITY

from tests.traffic import Loop

pytestmark = pytest.mark.e2e

SPOOFED = "203.0.113.7"


@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    home = tmp_path_factory.mktemp("https-deployment")
    deployment = https_stack.start(home, f"mediacms-https-{os.getpid()}")
    failed = request.session.testsfailed
    try:
        yield deployment
    finally:
        if request.session.testsfailed > failed:
            deployment.report()
        if os.environ.get("SMOKE_KEEP_STACK") == "1":
            print(f"\nHTTPS stack kept in {home}", file=sys.stderr)
        else:
            https_stack.down(deployment)


@pytest.fixture(scope="module")
def first(site):
    """The first certificate nginx serves, as soon as it has one."""
    return site.wait_certificate(timeout=90)


def test_certificate_is_issued_by_pebble_after_a_real_validation(site, first):
    names = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [NAME]
    assert "Pebble" in first.issuer.rfc4514_string()
    log = site.pebble_log()
    assert site.issued() == [first.serial_number], log[-3000:]
    # Pebble checked the challenge itself (no "always valid" shortcut is configured)
    assert re.search(r"authz \S+ set VALID by completed challenge", log), log[-3000:]
    assert "Skipping real validation" not in log


def test_a_new_acme_container_keeps_the_certificate(site, first):
    """acme recreated (as an upgrade does): the certificates volume brings the
    certificate and the ACME account back, and the CA is not asked again. nginx reads
    the same volume, read-only."""
    before = site.inspect("acme")["Id"]
    site.dc("up", "--detach", "--force-recreate", "--no-deps", "--wait", "acme", timeout=180)
    after = site.inspect("acme")
    assert after["Id"] != before
    volumes = {(m.get("Name"), m["Destination"], m["RW"]) for m in after["Mounts"]}
    assert (f"{site.compose.project}_certificates", "/data", True) in volumes, volumes
    volumes = {(m.get("Name"), m["Destination"], m["RW"]) for m in site.inspect("nginx")["Mounts"]}
    assert (f"{site.compose.project}_certificates", "/run/certificates", False) in volumes
    # without the volume's certificate Caddy orders one at once (Pebble answers within
    # seconds); nothing ordered in 12 s is the proof, the served one unchanged besides
    time.sleep(12)
    assert site.issued() == [first.serial_number]  # nothing asked of the CA
    assert site.wait_certificate(timeout=60).serial_number == first.serial_number


@pytest.mark.parametrize(
    ("service", "uid"), [("listeners", "990"), ("acme", "33"), ("nginx", "33")]
)
def test_the_front_runs_unprivileged_without_the_engines_socket(site, first, service, uid):
    from test_security_compose import setuid_files  # same folder: on sys.path

    found = site.inspect(service)
    assert site.dc("exec", "-T", service, "id", "-u").stdout.strip() == uid
    assert found["HostConfig"]["CapDrop"] == ["ALL"] and found["HostConfig"]["ReadonlyRootfs"]
    assert not [m for m in found["Mounts"] if "docker.sock" in m["Source"]], found["Mounts"]
    if service != "nginx":
        assert list(found["NetworkSettings"]["Networks"]) == [f"{site.compose.project}_frontend"]
    assert setuid_files(found["Image"]) == []


def test_only_nginx_takes_the_sockets_and_it_cannot_change_them(site, first):
    """The fd-holder gives both sockets to nginx's user (33) and to no other; that user,
    whose workers face the internet, can neither delete nor replace one (1: the daemon
    refused)."""
    holder = "/run/front/listeners"
    ids = site.dc("exec", "-T", "listeners", "s6-fdholder-list", holder)
    assert ids.stdout.split() == ["fd:http", "fd:https"], ids
    taken = site.dc("exec", "-T", "nginx", "s6-fdholder-getdump", "-t", "2000", holder, "true")
    assert taken.returncode == 0, taken
    for user in ("0", "65534", "990"):  # root, nobody, and the listeners' own user
        other = site.dc("exec", "-T", "--user", user, "listeners", "s6-fdholder-getdump",
                        "-t", "2000", holder, "true", check=False)  # fmt: skip
        assert other.returncode == 1, (user, other)
    deleted = site.dc("exec", "-T", "nginx", "s6-fdholder-delete", "-t", "2000", holder,
                      "fd:https", check=False)  # fmt: skip
    assert deleted.returncode == 1, deleted
    stored = site.dc("exec", "-T", "nginx", "sh", "-c",
                     f"s6-fdholder-store -t 2000 {holder} fd:https < /dev/null", check=False)  # fmt: skip
    assert stored.returncode == 1, stored
    assert site.dc("exec", "-T", "listeners", "s6-fdholder-list", holder).stdout == ids.stdout


#: The open flags (octal) of the sockets nginx took (S6_FD_* in its entrypoint's environment)
HELD_SOCKET_FLAGS = (
    "for fd in $(tr '\\0' '\\n' < /proc/1/environ | sed -n 's/^S6_FD_[0-9]*=//p'); do"
    " sed -n 's/^flags:[[:space:]]*//p' /proc/1/fdinfo/$fd; done"
)


def test_a_quiet_sites_simultaneous_visitors_are_all_answered_at_once(site, first):
    """The held sockets are non-blocking, as nginx expects of the sockets it inherits.
    Blocking ones let a worker woken for a connection another worker had taken wait in
    accept() for the next connection, the requests it held frozen meanwhile: on a quiet
    site a visitor waited until someone else came (60 s in a test, Pebble's check of a
    renewal timed out). Rounds of simultaneous new connections to both ports, the site
    idle between them: every request is answered within seconds."""
    flags = site.dc("exec", "-T", "nginx", "sh", "-c", HELD_SOCKET_FLAGS).stdout.split()
    assert len(flags) == 2 and all(int(f, 8) & os.O_NONBLOCK for f in flags), flags
    assert "blocking socket" not in site.dc("logs", "nginx").stdout

    def get(url: str) -> tuple[str, float, str]:
        port = site.https_port if url.startswith("https:") else site.http_port
        began = time.monotonic()
        done = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                               "--max-time", "20", "--cacert", str(site.root), "--connect-to",
                               f"{NAME}:{443 if port == site.https_port else 80}:127.0.0.1:{port}",
                               url], capture_output=True, text=True, check=False)  # fmt: skip
        return url, time.monotonic() - began, done.stdout if done.returncode == 0 else done.stderr

    # two to the app over HTTPS (200), two to the acme service through port 80 (Caddy
    # sends an unknown challenge's URL on to HTTPS: 308)
    urls = {f"https://{NAME}/": "200", f"https://{NAME}/api/v1/media": "200",
            **{f"http://{NAME}/.well-known/acme-challenge/quiet-{n}": "308" for n in range(2)}}  # fmt: skip
    late = []
    with ThreadPoolExecutor(len(urls)) as pool:
        for _ in range(15):
            late += [a for a in pool.map(get, urls) if a[1] > 10 or a[2] != urls[a[0]]]
            time.sleep(1)
    assert late == [], late


def test_home_page_hsts_and_permanent_redirect(site, first):
    home = site.curl(f"https://{NAME}/")
    assert home.status == 200 and b"MediaCMS" in home.body, home
    # one year, as nginx.conf's $hsts says; once (the app adds none)
    assert home.header("strict-transport-security") == "max-age=31536000", home.headers
    for path in ("/static/", "/media/", "/nonexistent-page"):  # locations with own headers
        other = site.curl(f"https://{NAME}{path}", check=False)
        assert other.headers.get("strict-transport-security") == ["max-age=31536000"], (path, other)
    moved = site.curl(f"http://{NAME}/x/y?a=1&b=two")
    assert moved.status == 308, moved
    assert moved.header("location") == f"https://{NAME}/x/y?a=1&b=two"


def test_other_names_get_no_certificate_and_no_page(site, first):
    """Only FRONTEND_HOST's name is served (one certificate: an ALLOWED_HOSTS name too is
    turned away): a handshake for another name (or none) is refused without showing a
    certificate, and another Host over HTTP, an ACME challenge's path included, or over
    an established TLS connection gets 400."""
    context = ssl.create_default_context(cafile=str(site.root))
    context.check_hostname = False
    for sni in ("evil.example", OTHER_NAME, None):
        with (
            pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"),
            socket.create_connection(("127.0.0.1", site.https_port), timeout=5) as raw,
        ):
            context.wrap_socket(raw, server_hostname=sni).close()
    for name in ("evil.example", OTHER_NAME):
        for path in ("/", "/.well-known/acme-challenge/anything"):
            other = site.curl(f"http://{name}{path}",
                              "--connect-to", f"{name}:80:127.0.0.1:{site.http_port}")  # fmt: skip
            assert other.status == 400, (name, path, other)
    mixed = site.curl(f"https://{NAME}/", "-H", "Host: evil.example", "--http1.1")
    assert mixed.status == 400 and b"MediaCMS" not in mixed.body, mixed


def test_tls_1_2_takes_aead_suites_only(site, first):
    """A TLS 1.2 client offering CBC suites alone gets no handshake; the same client
    offering an AEAD suite does (so the refusal is the server's)."""

    def handshake(ciphers: str) -> str:
        context = ssl.create_default_context(cafile=str(site.root))
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(ciphers)
        with (
            socket.create_connection(("127.0.0.1", site.https_port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=NAME) as tls,
        ):
            return tls.cipher()[0]

    assert handshake("ECDHE-ECDSA-AES128-GCM-SHA256") == "ECDHE-ECDSA-AES128-GCM-SHA256"
    # the server's alert, not the client's refusal to offer the suites
    with pytest.raises(ssl.SSLError, match=r"(?i)handshake.failure"):
        handshake("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256")


def test_django_sees_https_secure_cookies_and_the_admin_login_form_works(site, first):
    info = site.json(f"https://{NAME}/api/v1/request-info")
    assert info["is_secure"] is True and info["meta"]["HTTP_X_FORWARDED_PROTO"] == "https"
    jar = str(site.home / "cookies")
    page = site.curl(f"https://{NAME}/admin/login/", "-c", jar)
    assert page.status == 200
    csrf = [c for c in page.headers["set-cookie"] if c.startswith("csrftoken=")]
    assert csrf and "; secure" in csrf[0].lower(), page.headers["set-cookie"]
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body)[1].decode()
    login = site.curl(
        f"https://{NAME}/admin/login/?next=/admin/", "-b", jar, "-c", jar,
        "-H", f"Origin: https://{NAME}", "-H", f"Referer: https://{NAME}/admin/login/",
        "--data-urlencode", f"csrfmiddlewaretoken={token}", "--data-urlencode", "username=admin",
        "--data-urlencode", f"password={site.stack.admin_password}", "--data-urlencode",
        "next=/admin/",
    )  # fmt: skip
    assert login.status == 302 and login.header("location") == "/admin/", login
    session = [c for c in login.headers["set-cookie"] if c.startswith("sessionid=")]
    assert session and "; secure" in session[0].lower() and "httponly" in session[0].lower()
    admin = site.curl(f"https://{NAME}/admin/", "-b", jar)
    assert admin.status == 200 and b"Log out" in admin.body


def test_uploads_over_tls_stream_through(site, first):
    """A 160 MiB upload reaches the upload endpoint through nginx's TLS, which never
    holds it whole (its memory peak stays under the body's size)."""
    big = site.home / "upload.bin"
    with big.open("wb") as handle:
        for _ in range(160):
            handle.write(os.urandom(1 << 20))
    auth = f"admin:{site.stack.admin_password}"
    anon: list[int] = []
    sampling = threading.Event()

    def sample() -> None:  # nginx's own memory (not the files it writes) while it uploads
        while not sampling.wait(0.5):
            anon.append(site.memory_anon("nginx"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for attempt in (1, 2, 3):  # as a patient uploader: the 503 page says when to come back
        made = site.curl(f"https://{NAME}/api/v1/media", "-u", auth, "-F", "title=over tls",
                         "-F", f"media_file=@{big}", timeout=300)  # fmt: skip
        if made.status != 503 or attempt == 3:
            break
        warnings.warn(f"the 503 page for a 160 MiB upload at attempt {attempt}", stacklevel=1)
        time.sleep(min(int(made.header("retry-after") or 30), 30))
    sampling.set()
    sampler.join(timeout=30)
    big.unlink()
    assert made.status == 201, (made.status, made.body[:300])
    # absolute URLs the app builds name the https site
    url = json.loads(made.body)["url"]
    assert re.fullmatch(rf"https://{re.escape(NAME)}/api/v1/media/\d+", url), url
    state = site.inspect("nginx")["State"]
    assert state["Running"] and not state["OOMKilled"], state
    # nginx keeps a large body in a file (/var/cache/nginx), not in its memory
    assert max(anon) < 64 << 20, anon


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_over_10_mib_elsewhere_is_refused_by_nginx_every_time(site, first, framing):
    """nginx owns the body limits and refuses before the app sees anything. The client
    gets the 413, or, when nginx closes the connection on the rest of the upload, a cut
    connection; never anything from the app."""
    body = site.home / "body.bin"
    body.write_bytes(b"x" * (11 << 20))
    chunked = ["-H", "Transfer-Encoding: chunked"] if framing == "chunked" else []
    probe = uuid.uuid4().hex
    auth = f"admin:{site.stack.admin_password}"
    whole = 0
    for _ in range(20):
        refused = site.curl(f"https://{NAME}/api/v1/login?probe={probe}", "-u", auth,
                            *chunked, "--data-binary", f"@{body}", check=False)  # fmt: skip
        # curl's codes for a cut transfer (16, 92: HTTP/2; 18, 52, 55, 56: HTTP/1.1),
        # after the 413's headers or before them
        assert refused.status in (413, 0) and refused.exit in (0, 16, 18, 52, 55, 56, 92), refused
        whole += refused.status == 413 and b"413 Request Entity Too Large" in refused.body
    access = re.compile(
        rf'"POST /api/v1/login\?probe={probe} HTTP/[\d.]+" (\d+) .* upstream=(\S+)$'
    )
    logged = [access.search(line) for line in access_log(site, f"probe={probe} ", count=20)]
    answers = [found.groups() for found in logged if found]
    assert answers == [("413", "-")] * 20, answers  # every one refused, no upstream asked
    print(f"\n[measured] {framing} bodies over the limit: {whole}/20 got the whole 413")


def test_a_body_under_10_mib_reaches_the_app(site, first):
    body = site.home / "body.bin"
    body.write_bytes(b"x" * (9 << 20))  # under the limit: the app answers (wrong password)
    within = site.curl(f"https://{NAME}/api/v1/login", "-u", "admin:wrong", "--data-binary",
                       f"@{body}")  # fmt: skip
    assert within.status == 401, within


def test_a_clients_own_forwarding_headers_are_not_believed(site, first):
    probe = uuid.uuid4().hex
    info = site.json(
        f"https://{NAME}/api/v1/request-info?probe={probe}",
        "-H", f"X-Forwarded-For: {SPOOFED}", "-H", "X-Forwarded-Proto: http",
        "-H", f"X-Real-IP: {SPOOFED}", "-H", f"Forwarded: for={SPOOFED};proto=http",
        "-H", "X-Forwarded-Host: evil.example",
    )  # fmt: skip
    meta = info["meta"]
    assert SPOOFED not in str(meta), meta
    assert info["is_secure"] is True and meta["HTTP_X_FORWARDED_PROTO"] == "https"
    assert meta["HTTP_HOST"] == NAME and not meta["HTTP_X_FORWARDED_HOST"]
    logged = access_log(site, probe)
    assert len(logged) == 1 and not logged[0].startswith(SPOOFED), logged
    assert logged[0].split()[0] == meta["REMOTE_ADDR"]


def test_the_certificate_is_renewed_before_it_expires(site, first):
    """Pebble's certificates live VALIDITY seconds; Caddy renews with a third left and
    nginx reloads with the new one. (Before the tests that replace nginx: the CA's check
    of a renewal made while nginx is replaced fails, and Caddy tries again only a
    minute later, after the first certificate expired.)"""
    left = first.not_valid_after_utc.timestamp() - time.time()
    renewed = site.wait_certificate(not_serial=first.serial_number, timeout=left + 15)
    assert renewed.not_valid_after_utc > first.not_valid_after_utc
    assert time.time() < first.not_valid_after_utc.timestamp()  # before the old one expired
    issued = site.issued()
    assert issued[0] == first.serial_number and len(issued) >= 2
    assert renewed.serial_number in issued
    assert (renewed.not_valid_after_utc - renewed.not_valid_before_utc).seconds >= VALIDITY - 2


class OverHttps(Loop):
    """The GET loop over HTTPS through the held port (curl, trusting Pebble's root, a new
    connection for each request); a transfer that fails counts as curl's complaint."""

    def __init__(self, site, limit: float) -> None:
        super().__init__(f"https://{NAME}", limit)
        self.site = site

    def fetch(self, path: str) -> int | str:
        argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "60",
                "--cacert", str(self.site.root),
                "--connect-to", f"{NAME}:443:127.0.0.1:{self.site.https_port}", self.base + path]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return int(done.stdout) if done.returncode == 0 else f"curl: {done.stderr.strip()}"


def test_nginx_recreated_by_compose_fails_no_request(site, first):
    """nginx recreated by compose itself (`docker compose up` after a pull, a rollback),
    under a loop of GET requests over HTTPS: the old nginx ends what it answers
    (stop_signal SIGQUIT), the port stays open at the listeners service, and a connection
    made while no nginx runs waits in its queue until the new one takes the sockets.
    None fails. (Our own tasks start the new nginx beside the old one: the download
    test, last.)"""
    loop = OverHttps(site, limit=300)
    loop.start()
    try:
        time.sleep(3)
        before = site.inspect("nginx")["Id"]
        started = time.monotonic()
        site.dc("up", "--detach", "--no-deps", "--force-recreate", "--wait", "nginx")
        assert site.inspect("nginx")["Id"] != before
        ended = time.monotonic()
        time.sleep(3)
    finally:
        loop.stopped.set()
        loop.join(timeout=90)
    during = loop.during(started, ended)
    print(f"\n[measured] nginx recreated by compose behind held ports: {len(during)} requests "
          f"in {ended - started:.0f} s, {len(loop.failed())} failed; slowest "
          f"{loop.slowest():.1f} s")  # fmt: skip
    assert len(during) >= 10 and loop.failed() == [], loop.failed()[:10]


def test_nginx_takes_the_new_sockets_when_the_listeners_container_starts_again(site, first):
    """The listeners container restarted by the engine (a crash, `docker restart`): its
    sockets are new ones, nginx's entrypoint sees the new generation and stops, its
    restart policy starts it again with them, and HTTPS answers again."""
    before = site.inspect("nginx")["State"]["StartedAt"]
    subprocess.run(["docker", "restart", site.inspect("listeners")["Id"]], check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    began = time.monotonic()
    answer = None
    while time.monotonic() - began < 90:
        answer = site.curl(f"https://{NAME}/", timeout=5, check=False)
        if answer.status == 200:
            break
        time.sleep(1)
    took = time.monotonic() - began
    print(f"\n[measured] HTTPS answered again {took:.1f} s after the listeners restarted")
    assert answer is not None and answer.status == 200, answer
    assert site.inspect("nginx")["State"]["StartedAt"] != before  # nginx started again


def test_a_download_under_way_arrives_whole_when_nginx_restarts(site, first):
    """`invoke restart --service nginx` behind the overlay (an upgrade replaces nginx the
    same way, last) starts a new nginx beside the old one, which gets SIGQUIT once the new
    one is healthy: it stops accepting and ends the responses it is sending. A 96 MiB
    download read at 2 MiB/s over HTTPS, begun before, is still under way when the new
    nginx takes over and arrives whole (its connection lives at the listeners service,
    whose network stays), and the GET loop fails nothing."""
    body = os.urandom(96 << 20)
    served = site.home / "custom" / "static" / f"download-{uuid.uuid4().hex}.bin"
    served.parent.mkdir(parents=True, exist_ok=True)
    served.write_bytes(body)
    served.chmod(0o644)
    received = site.home / "received.bin"
    before = site.inspect("nginx")["Id"]
    loop = OverHttps(site, limit=300)
    loop.start()
    download = subprocess.Popen(
        ["curl", "-sS", "--fail", "--limit-rate", "2M", "--max-time", "240", "-o", str(received),
         "--cacert", str(site.root), "--connect-to", f"{NAME}:443:127.0.0.1:{site.https_port}",
         f"https://{NAME}/custom/static/{served.name}"],
        stderr=subprocess.PIPE, text=True)  # fmt: skip
    handover: list[bool] = []  # was the download under way when two nginx were healthy?

    def watch() -> None:
        healthy = ["docker", "ps", "--quiet", "--filter", "health=healthy", "--filter",
                   f"label=com.docker.compose.project={site.compose.project}",
                   "--filter", "label=com.docker.compose.service=nginx"]  # fmt: skip
        while not handover and download.poll() is None:
            found = subprocess.run(healthy, capture_output=True, text=True, check=False)
            if len(found.stdout.split()) == 2:
                handover.append(download.poll() is None)
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        time.sleep(3)
        assert download.poll() is None, download.stderr.read()  # under way
        watcher.start()
        began = time.monotonic()
        site.stack.invoke("restart", "--service", "nginx")
        took = time.monotonic() - began
        _, complaint = download.communicate(timeout=240)
        watcher.join(timeout=10)
        under_way = handover == [True]
    finally:
        download.kill()
        loop.stopped.set()
        loop.join(timeout=90)
        served.unlink()
    print(f"\n[measured] nginx restarted beside in {took:.0f} s with a download "
          f"under way: {received.stat().st_size} of {len(body)} bytes, curl exit "
          f"{download.returncode}; {len(loop.answers)} GETs, {len(loop.failed())} failed")  # fmt: skip
    assert download.returncode == 0 and received.read_bytes() == body, complaint
    assert under_way, "the download ended before the new nginx took over: nothing was tested"
    assert site.inspect("nginx")["Id"] != before  # a new container serves
    assert len(site.dc("ps", "--quiet", "nginx").stdout.split()) == 1  # the old one is gone
    assert loop.failed() == [], loop.failed()[:10]
