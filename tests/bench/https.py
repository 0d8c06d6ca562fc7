"""Requests per second for a static file: HTTPS through the overlay's Caddy vs plain HTTP
to nginx, on the same stack (loopback, one client, bounded request counts).

    python tests/bench/https.py [--requests N]

The stack is the one tests/e2e/test_https.py runs (certificate from Pebble, trusted
through Pebble's root), with nginx's plain port published beside Caddy's for the
comparison; it is removed at the end.
"""

from __future__ import annotations

import argparse
import http.client
import os
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import https_stack
from https_stack import NAME

PATH = "/static/css/app.css"


class SiteConnection(http.client.HTTPConnection):
    """HTTPS to 127.0.0.1:port with the site's name as SNI and as the name checked."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        super().__init__("127.0.0.1", port, timeout=10)
        self.context = context

    def connect(self) -> None:
        super().connect()
        self.sock = self.context.wrap_socket(self.sock, server_hostname=NAME)


def rate(connect, requests: int, *, keep_alive: bool) -> float:
    """Requests per second for ``requests`` GETs of PATH, one at a time."""
    conn = connect()
    start = time.perf_counter()
    for _ in range(requests):
        if not keep_alive:
            conn = connect()
        conn.request("GET", PATH, headers={"Host": NAME})
        answer = conn.getresponse()
        body = answer.read()
        assert answer.status == 200 and body, answer.status
        if not keep_alive:
            conn.close()
    elapsed = time.perf_counter() - start
    conn.close()
    return requests / elapsed


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
            return SiteConnection(deployment.https_port, context)

        def plain():
            return http.client.HTTPConnection("127.0.0.1", plain_port, timeout=10)

        for keep_alive, label in ((True, "keep-alive"), (False, "new connection each")):
            count = args.requests if keep_alive else args.requests // 4
            ratios, tls_rates, plain_rates = [], [], []
            for index in range(args.rounds):  # alternate the order: drift hits both
                first, second = (plain, https) if index % 2 == 0 else (https, plain)
                one = rate(first, count, keep_alive=keep_alive)
                two = rate(second, count, keep_alive=keep_alive)
                p, t = (one, two) if first is plain else (two, one)
                plain_rates.append(p)
                tls_rates.append(t)
                ratios.append(t / p)
            print(f"static file, {label}, {count} requests x {args.rounds} rounds: "
                  f"HTTP to nginx {statistics.median(plain_rates):7.0f} req/s, "
                  f"HTTPS through Caddy {statistics.median(tls_rates):7.0f} req/s, "
                  f"ratio HTTPS/HTTP {statistics.median(ratios):.2f}", flush=True)  # fmt: skip
    finally:
        https_stack.down(deployment)


if __name__ == "__main__":
    main()
