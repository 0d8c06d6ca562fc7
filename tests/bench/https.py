"""Requests per second for a static file and for 1 KiB ranges of a public media file:
HTTPS through the overlay (nginx ends TLS on the port the listeners service holds) vs
plain HTTP to the same nginx, on the same stack, with keep-alive and with a new
connection (a new TLS handshake) for each request.

    python tests/bench/https.py [--rounds N]

Measured the way every throughput figure of the bench is (tests/bench/load.py): wrk on
CPU 0, nginx on CPU 1, each reached at its container's own address (HTTPS: the
listeners container's, where the held sockets are bound; plain HTTP: nginx's port
8080), never through a port published on loopback. The two alternate within a round,
a few seconds apart; the figure is the median of the rounds' ratios.

The stack is the one tests/e2e/test_https.py runs (certificate from Pebble); it is
removed at the end. Exits non-zero when a keep-alive ratio HTTPS/HTTP is below GOAL
(issue 21): a browser keeps its connection to the site.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import ssl
import statistics
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from urllib3 import encode_multipart_formdata

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import https_stack
from conftest import ADMIN_PASSWORD
from https_stack import NAME

from tests.bench.load import address, nginx_url, wrk
from tests.uploads import basic

GOAL = 0.8  # HTTPS / HTTP with keep-alive, issue 21
STATIC = "/static/css/app.css"
RANGE = "Range: bytes=0-1023"


class SiteConnection(http.client.HTTPConnection):
    """HTTPS to host:port with the site's name as SNI (and as the name checked, when the
    context checks names)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=10)
        self.context = context

    def connect(self) -> None:
        super().connect()
        self.sock = self.context.wrap_socket(self.sock, server_hostname=NAME)


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
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3, help="of wrk per measure")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing (apt-get install wrk)")
    home = Path(tempfile.mkdtemp(prefix="bench-https-"))
    deployment = https_stack.start(home, f"mediacms-bench-https-{os.getpid()}")
    try:
        deployment.wait_certificate(timeout=90)
        context = ssl.create_default_context(cafile=str(deployment.root))
        media = public_media(SiteConnection("127.0.0.1", deployment.https_port, context))
        plain = nginx_url(deployment)  # pins nginx to CPU 1
        held = address(deployment.dc("ps", "--quiet", "listeners").stdout.split()[0])
        reached = True
        for what, path, headers in (("static file", STATIC, ()),
                                    ("public media, 1 KiB range", media, (RANGE,))):  # fmt: skip
            for keep_alive, label in ((True, "keep-alive"), (False, "new connection each")):
                sent = headers if keep_alive else (*headers, "Connection: close")
                urls = {"http": plain + path, "https": f"https://{NAME}{path}"}
                rates: dict[str, list[float]] = {"http": [], "https": []}
                for index in range(args.rounds):  # alternate the order: drift hits both
                    for kind in ("http", "https") if index % 2 == 0 else ("https", "http"):
                        rates[kind].append(wrk(NAME, urls[kind], args.seconds, sent,
                                               resolve=(NAME, held)))  # fmt: skip
                ratios = [t / p for t, p in zip(rates["https"], rates["http"], strict=True)]
                ratio = statistics.median(ratios)
                goal = f" (goal {GOAL})" if keep_alive else ""
                reached &= ratio >= GOAL or not keep_alive
                print(f"{what}, {label}, median of {args.rounds} rounds: "
                      f"HTTP {statistics.median(rates['http']):7.0f} req/s, "
                      f"HTTPS {statistics.median(rates['https']):7.0f} req/s, "
                      f"ratio HTTPS/HTTP {ratio:.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
                      f"{goal}", flush=True)  # fmt: skip
    finally:
        https_stack.down(deployment)
    if not reached:
        sys.exit(f"HTTPS: a keep-alive ratio HTTPS/HTTP is below {GOAL}")


if __name__ == "__main__":
    main()
