"""Requests per second for a static file and for 1 KiB ranges of a public media file:
HTTPS through the overlay's Caddy vs plain HTTP to nginx, on the same stack (loopback,
one client, bounded request counts), with keep-alive and with a new connection (a new
TLS handshake) for each request.

    python tests/bench/https.py [--requests N]

The stack is the one tests/e2e/test_https.py runs (certificate from Pebble, trusted
through Pebble's root), with nginx's plain port published beside Caddy's for the
comparison; it is removed at the end. Exits non-zero when a keep-alive ratio HTTPS/HTTP
is below GOAL (issue 21): a browser keeps its connection to the site.

Then where the time of an HTTPS request goes: a second Caddy (same image, a certificate
of its own CA) beside the stack answers by itself and passes to nginx, each over HTTP
and HTTPS, measured from the host at the containers' own addresses against nginx alone:
what TLS costs, and what one more proxy in front costs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from urllib3 import encode_multipart_formdata

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import https_stack
from conftest import ADMIN_PASSWORD
from https_stack import NAME
from load import address

from tests.uploads import basic

GOAL = 0.8  # HTTPS / HTTP with keep-alive, issue 21
STATIC = "/static/css/app.css"
RANGE = {"Range": "bytes=0-1023"}


class SiteConnection(http.client.HTTPConnection):
    """HTTPS to host:port with the site's name as SNI (and as the name checked, when the
    context checks names)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=10)
        self.context = context

    def connect(self) -> None:
        super().connect()
        self.sock = self.context.wrap_socket(self.sock, server_hostname=NAME)


def rate(connect, requests: int, path: str, headers: dict, *, keep_alive: bool) -> float:
    """Requests per second for ``requests`` GETs of ``path``, one at a time."""
    conn = connect()
    start = time.perf_counter()
    for _ in range(requests):
        if not keep_alive:
            conn = connect()
        conn.request("GET", path, headers={"Host": NAME, **headers})
        answer = conn.getresponse()
        body = answer.read()
        assert answer.status in (200, 206) and body, (path, answer.status)
        if not keep_alive:
            conn.close()
    elapsed = time.perf_counter() - start
    conn.close()
    return requests / elapsed


#: The second Caddy's sites: answering itself, and passing to nginx's proxy listener,
#: each over HTTP and over HTTPS (a certificate of Caddy's own CA).
PARTS_CADDYFILE = f"""{{
	auto_https disable_redirects
	skip_install_trust
}}
:9001 {{
	respond "0123456789"
}}
:9002 {{
	reverse_proxy nginx:8081
}}
https://{NAME}:9443 {{
	tls internal
	respond "0123456789"
}}
https://{NAME}:9444 {{
	tls internal
	reverse_proxy nginx:8081
}}
"""


def where_the_time_goes(deployment, requests: int, rounds: int) -> None:
    """Microseconds per keep-alive request, one at a time: nginx alone, a Caddy answering
    by itself and a Caddy passing to nginx, over HTTP and HTTPS (containers' addresses)."""
    caddy = deployment.inspect("caddy")
    network = next(iter(caddy["NetworkSettings"]["Networks"]))
    name = f"bench-https-parts-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="bench-caddy-") as folder:
        caddyfile = Path(folder, "Caddyfile")
        caddyfile.write_text(PARTS_CADDYFILE)
        Path(folder).chmod(0o755)  # read by Caddy's unprivileged user
        caddyfile.chmod(0o644)
        subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "--network", network,
                        "-v", f"{caddyfile}:/etc/caddy/Caddyfile:ro", caddy["Config"]["Image"]],
                       check=True, capture_output=True)  # fmt: skip
        try:
            parts_timed(name, deployment, requests, rounds)
        finally:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def parts_timed(name: str, deployment, requests: int, rounds: int) -> None:
    """The measure of :func:`where_the_time_goes`, the second Caddy being container ``name``."""
    own = ssl.create_default_context()  # the second Caddy's CA is not worth trusting here
    own.check_hostname, own.verify_mode = False, ssl.CERT_NONE
    there, nginx = address(name), address(deployment.inspect("nginx")["Id"])

    def tls(port: int):
        return lambda: SiteConnection(there, port, own)

    def plain(host: str, port: int):
        return lambda: http.client.HTTPConnection(host, port, timeout=10)

    parts = {
        "nginx alone (HTTP)": (plain(nginx, 8081), STATIC),
        "Caddy answering itself, HTTP": (plain(there, 9001), "/"),
        "Caddy answering itself, HTTPS": (tls(9443), "/"),
        "Caddy passing to nginx, HTTP": (plain(there, 9002), STATIC),
        "Caddy passing to nginx, HTTPS": (tls(9444), STATIC),
    }
    for _ in range(50):  # Caddy's own certificate, made at its start
        try:
            rate(tls(9443), 1, "/", {}, keep_alive=True)
            break
        except (OSError, ssl.SSLError):
            time.sleep(0.2)
    took: dict[str, list[float]] = {}
    for _ in range(rounds):
        for part, (connect, path) in parts.items():
            per_second = rate(connect, requests, path, {}, keep_alive=True)
            took.setdefault(part, []).append(1e6 / per_second)
    us = {part: statistics.median(values) for part, values in took.items()}
    print("where an HTTPS request's time goes (keep-alive, one at a time, to the containers' "
          "own addresses; median microseconds per request):", flush=True)  # fmt: skip
    for part, value in us.items():
        print(f"  {part:<32} {value:6.0f}", flush=True)
    tls = us["Caddy answering itself, HTTPS"] - us["Caddy answering itself, HTTP"]
    hop = us["Caddy passing to nginx, HTTP"] - us["nginx alone (HTTP)"]
    alone, proxied = us["nginx alone (HTTP)"], us["Caddy passing to nginx, HTTPS"]
    print(f"  TLS {tls:.0f}, one proxy more in front of nginx {hop:.0f}: HTTPS through a proxy "
          f"in front is {alone / proxied:.2f} of nginx alone; TLS ended in nginx would be about "
          f"{alone / (alone + tls):.2f} (estimated: nginx alone + Caddy's TLS)", flush=True)  # fmt: skip


def public_media(conn: http.client.HTTPConnection) -> str:
    """Upload a public media file as the admin; the path of its original."""
    body, kind = encode_multipart_formdata({
        "title": "bench", "state": "public",
        "media_file": ("bench.mp4", os.urandom(64 << 10), "video/mp4")})  # fmt: skip
    conn.request("POST", "/api/v1/media", body, {"Host": NAME, "Content-Type": kind,
                                                 "Authorization": basic("admin", ADMIN_PASSWORD)})  # fmt: skip
    answer = conn.getresponse()
    made = answer.read()
    assert answer.status == 201, (answer.status, made[:300])
    return urlsplit(json.loads(made)["original_url"]).path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-https-"))
    deployment = https_stack.start(home, f"mediacms-bench-https-{os.getpid()}",
                                   publish_nginx=True)  # fmt: skip
    try:
        deployment.wait_certificate(timeout=90)
        plain_port = int(deployment.dc("port", "nginx", "8080").stdout.strip().rsplit(":", 1)[1])
        context = ssl.create_default_context(cafile=str(deployment.root))

        def https():
            return SiteConnection("127.0.0.1", deployment.https_port, context)

        def plain():
            return http.client.HTTPConnection("127.0.0.1", plain_port, timeout=10)

        media = public_media(https())
        reached = True
        for what, path, headers in (("static file", STATIC, {}),
                                    ("public media, 1 KiB range", media, RANGE)):  # fmt: skip
            for keep_alive, label in ((True, "keep-alive"), (False, "new connection each")):
                count = args.requests if keep_alive else args.requests // 4
                ratios, tls_rates, plain_rates = [], [], []
                for index in range(args.rounds):  # alternate the order: drift hits both
                    first, second = (plain, https) if index % 2 == 0 else (https, plain)
                    one = rate(first, count, path, headers, keep_alive=keep_alive)
                    two = rate(second, count, path, headers, keep_alive=keep_alive)
                    p, t = (one, two) if first is plain else (two, one)
                    plain_rates.append(p)
                    tls_rates.append(t)
                    ratios.append(t / p)
                ratio = statistics.median(ratios)
                goal = f" (goal {GOAL})" if keep_alive else ""
                reached &= ratio >= GOAL or not keep_alive
                print(f"{what}, {label}, {count} requests x {args.rounds} rounds: "
                      f"HTTP to nginx {statistics.median(plain_rates):7.0f} req/s, "
                      f"HTTPS through Caddy {statistics.median(tls_rates):7.0f} req/s, "
                      f"ratio HTTPS/HTTP {ratio:.2f}{goal}", flush=True)  # fmt: skip
        where_the_time_goes(deployment, args.requests, args.rounds)
    finally:
        https_stack.down(deployment)
    if not reached:
        sys.exit(f"HTTPS: a keep-alive ratio HTTPS/HTTP is below {GOAL}")


if __name__ == "__main__":
    main()
