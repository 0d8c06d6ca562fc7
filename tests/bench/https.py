"""Requests per second for a static file and for 1 KiB ranges of a public media file:
HTTPS through the overlay (nginx ends TLS on the port the listeners service holds) vs
plain HTTP to the same nginx, on the same stack (loopback, one client, bounded request
counts), with keep-alive and with a new connection (a new TLS handshake) for each
request.

    python tests/bench/https.py [--requests N]

The stack is the one tests/e2e/test_https.py runs (certificate from Pebble, trusted
through Pebble's root), with nginx's plain port published beside the held ones for
the comparison; it is removed at the end. Exits non-zero when a keep-alive ratio
HTTPS/HTTP is below GOAL (issue 21): a browser keeps its connection to the site.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import statistics
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
                      f"HTTPS {statistics.median(tls_rates):7.0f} req/s, "
                      f"ratio HTTPS/HTTP {ratio:.2f}{goal}", flush=True)  # fmt: skip
    finally:
        https_stack.down(deployment)
    if not reached:
        sys.exit(f"HTTPS: a keep-alive ratio HTTPS/HTTP is below {GOAL}")


if __name__ == "__main__":
    main()
