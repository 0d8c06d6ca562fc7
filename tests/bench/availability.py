"""What a visitor sees while the operations that replace containers run, one after the
other on one stand-in stack: (d) `invoke restart --service web`, (c) an upgrade that
fails (its migration raises) and rolls back by itself, (a) a compatible upgrade (a
nullable column), (b) an upgrade with a destructive migration (the column dropped), and
(e) kill -9 of one of two web containers; then, on a stack behind the HTTPS overlay
(nginx's TLS, a certificate from Pebble), (a) again and `invoke restart --service nginx`:
the overlay's listeners service holds the ports there, so the new nginx starts beside
the old one.

    python tests/bench/availability.py        (the test app's images: MEDIACMS_ENV_FILE)

The visitor, on its own thread on 127.0.0.1, sends in turn: the home page, the media
list, 1 KiB of a media file (Range) and a login (POST), about 7 a second, for each
operation and 3 s before and after it. For each: the requests, the failed ones (no
answer, or a 5xx that is not the 503 page with Retry-After), the 503 pages, the
connections refused while nginx is replaced (the one gap on plain HTTP: README,
Upgrades), the longest outage (from the first to the last answer of the longest run
that is not served) and the slowest answer. Exits non-zero when a goal is missed: no
failure in (a), (d) and (e), the nginx swap's refusals aside; only the 503 page in (b)
and (c), each outage under 30 s. The stack and the versions' images are removed at
the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from invoke import Context

from mediacms_stack.procedures.ops import wait_healthy
from mediacms_stack.stack import config
from tests.e2e.conftest import ADMIN_PASSWORD, Stack, new_deployment
from tests.traffic import Answers, outside_the_swap, the_swap, under_answers
from tests.versions import ADD, DROP, FAILING, Versions, reads_the_note

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # its own imports
import https_stack

#: the longest outage allowed where the 503 page is expected (issue 19)
OUTAGE_GOAL = 30.0
LOGIN = "/api/v1/login"


class Visitor(Answers):
    """The pages, the API, a media file's first KiB and a login, in turn; a new
    connection for each."""

    def __init__(self, base: str, media: str, limit: float = 900) -> None:
        super().__init__(base, limit)
        self.paths = ("/", "/api/v1/media", media, LOGIN)
        self.media = media

    def client(self) -> requests.Session:
        return requests.Session()

    def fetch(self, path: str) -> int | str:
        try:
            with self.client() as client:
                if path == LOGIN:
                    answer = client.post(self.base + path, auth=("admin", ADMIN_PASSWORD),
                                         timeout=30)  # fmt: skip
                else:
                    headers = {"Range": "bytes=0-1023"} if path == self.media else {}
                    answer = client.get(self.base + path, headers=headers, timeout=30)
            return self.outcome(answer)
        except requests.RequestException as error:
            return type(error).__name__


class ToSite(requests.adapters.HTTPAdapter):
    """HTTPS to the overlay's published port on 127.0.0.1 as to the site's name (SNI and
    the certificate's name), trusting Pebble's root."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        kwargs.update(server_hostname=https_stack.NAME, assert_hostname=https_stack.NAME)
        super().init_poolmanager(*args, **kwargs)


class OverHttps(Visitor):
    """The same visitor through the HTTPS overlay: a new TLS connection for each."""

    def __init__(self, site: https_stack.HttpsDeployment, media: str) -> None:
        super().__init__(f"https://127.0.0.1:{site.https_port}", media)
        self.root = str(site.root)

    def client(self) -> requests.Session:
        client = requests.Session()
        client.trust_env = False  # REQUESTS_CA_BUNDLE would replace Pebble's root
        client.mount(self.base, ToSite())
        client.verify = self.root
        client.headers["Host"] = https_stack.NAME
        return client


def served(answer: tuple) -> bool:
    status = answer[3]
    return isinstance(status, int) and status < 500


def longest_outage(loop: Answers) -> float:
    """Seconds from the first to the last answer of the longest run not served."""
    longest, first = 0.0, None
    for answer in loop.answers:
        if served(answer):
            first = None
            continue
        first = first or answer
        longest = max(longest, answer[1] - first[0])
    return longest


def measured(visitor: Visitor, action: Callable[[], object], *, swap: bool) -> dict:
    """The ``visitor``'s figures while ``action`` runs; ``swap``: it replaces nginx (an
    upgrade), whose refused connections are counted apart."""
    _, loop, start, end = under_answers(visitor.base, action, loop=visitor)
    failed = outside_the_swap(loop, start, end) if swap else [
        a for a in loop.failed() if a[3] != 503]  # fmt: skip
    return {
        "requests": len(loop.answers),
        "failed": len(failed),
        "503 page": sum(1 for a in loop.answers if a[3] == 503),
        "503 to a login": sum(1 for a in loop.answers if a[3] == 503 and a[2] == LOGIN),
        "refused at the nginx swap": len(the_swap(loop, start, end)) if swap else 0,
        "longest outage s": round(longest_outage(loop), 1),
        "slowest s": round(loop.slowest(), 1),
        "took s": round(end - start, 1),
        "not served": dict(Counter(f"{a[2]} {a[3]}" for a in loop.answers if not served(a))),
    }


def met(name: str, row: dict) -> bool:
    """The goal of each operation: nothing failed; in (b) and (c) the 503 page for no
    more than OUTAGE_GOAL; elsewhere no 503 page, but in (e) for a login (a POST) that the
    killed container was serving, which no one may send again on the visitor's behalf."""
    if row["failed"]:
        return False
    if name.startswith(("(b)", "(c)")):
        return row["longest outage s"] <= OUTAGE_GOAL
    allowed = row["503 to a login"] if name.startswith("(e)") else 0
    return row["503 page"] <= allowed


def must(done: subprocess.CompletedProcess, succeed: bool = True) -> None:
    if (done.returncode == 0) != succeed:
        sys.exit(f"unexpected exit {done.returncode}:\n{done.stdout[-3000:]}\n"
                 f"{done.stderr[-3000:]}")  # fmt: skip


def kill_one_of_two(stack: Stack) -> Callable[[], None]:
    """Two web containers, and the action: kill -9 of one, which is started again 10 s
    later and must be healthy."""
    config.update(stack.settings, {"WEB_REPLICAS": "2"})
    must(stack.invoke("up", check=False))
    first = sorted(stack.dc("ps", "--format", "{{.Name}}", "web").stdout.split())[0]

    def action() -> None:
        subprocess.run(["docker", "kill", "--signal", "KILL", first], check=True,
                       capture_output=True)  # fmt: skip
        time.sleep(10)  # the other one answers alone
        subprocess.run(["docker", "start", first], check=True, capture_output=True)
        wait_healthy(Context(), stack.compose, ("web",), 300)

    return action


def behind_https(rows: dict[str, dict]) -> None:
    """(a) and a restart of nginx on a stack behind the HTTPS overlay, into ``rows``."""
    home = Path(tempfile.mkdtemp(prefix="bench-availability-https-"))
    site = https_stack.start(home, f"mediacms-bench-https-{os.getpid()}")
    versions = Versions(site.stack, home / "versions")
    add = versions.make("https-add", {"9101_gate_note": ADD}, reads_the_note)
    try:
        site.wait_certificate(timeout=90)
        versions.build(add)
        visitor = OverHttps(site, "/")
        with visitor.client() as client:
            uploaded = client.post(visitor.base + "/api/v1/media", timeout=60,
                                   auth=("admin", ADMIN_PASSWORD),
                                   data={"title": "bench", "state": "public"},
                                   files={"media_file": ("bench.mp4", os.urandom(64 << 10))})  # fmt: skip
        uploaded.raise_for_status()
        media = urlsplit(uploaded.json()["original_url"]).path
        steps = {
            "(a) compatible upgrade, HTTPS": lambda: must(
                versions.upgrade(add, *versions.from_source(add))
            ),
            "(f) restart --service nginx, HTTPS": lambda: must(
                site.stack.invoke("restart", "--service", "nginx", check=False)
            ),
        }
        for name, action in steps.items():
            rows[name] = measured(OverHttps(site, media), action, swap=False)
            print(f"{name:<34} {rows[name]}", flush=True)
    finally:
        https_stack.down(site)
        versions.remove(add)
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-availability-"))
    stack = new_deployment(home, f"mediacms-bench-availability-{os.getpid()}")
    versions = Versions(stack, home / "versions")
    made = [
        versions.make("broken", {"9001_broken_probe": FAILING}),
        versions.make("add", {"9101_gate_note": ADD}, reads_the_note),
        versions.make("drop", {"9101_gate_note": ADD, "9102_drop_gate_note": DROP}),
    ]
    broken, add, drop = made
    rows: dict[str, dict] = {}
    try:
        must(stack.invoke("up", check=False))
        for version in made:  # before any loop: the upgrades' --build finds every layer
            versions.build(version)
        uploaded = requests.post(stack.url("/api/v1/media"), auth=("admin", ADMIN_PASSWORD),
                                 data={"title": "bench", "state": "public"}, timeout=60,
                                 files={"media_file": ("bench.mp4", os.urandom(64 << 10))})  # fmt: skip
        uploaded.raise_for_status()
        media = uploaded.json()["original_url"]

        def upgrade(version: str, succeed: bool = True) -> Callable[[], None]:
            return lambda: must(versions.upgrade(version, *versions.from_source(version)),
                                succeed)  # fmt: skip

        steps = {
            "(d) restart web": lambda: must(
                stack.invoke("restart", "--service", "web", check=False)
            ),
            "(c) failed upgrade, rolled back": upgrade(broken, succeed=False),
            "(a) compatible upgrade": upgrade(add),
            "(b) destructive migration upgrade": upgrade(drop),
        }
        for name, action in steps.items():
            rows[name] = measured(Visitor(stack.base, media), action, swap="upgrade" in name)
            print(f"{name:<34} {rows[name]}", flush=True)
        name = "(e) kill -9 of one of two web"
        rows[name] = measured(Visitor(stack.base, media), kill_one_of_two(stack), swap=False)
        print(f"{name:<34} {rows[name]}", flush=True)
    finally:
        stack.dc("down", "--volumes", "--remove-orphans", check=False)
        versions.remove(*made)
        shutil.rmtree(home, ignore_errors=True)
    behind_https(rows)
    missed = [name for name, row in rows.items() if not met(name, row)]
    print("\n| operation | requests | failed | 503 page | refused at the nginx swap | "
          "longest outage | slowest |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for name, row in rows.items():
        print(f"| {name} | {row['requests']} | {row['failed']} | {row['503 page']} | "
              f"{row['refused at the nginx swap']} | {row['longest outage s']} s | "
              f"{row['slowest s']} s |")  # fmt: skip
    if missed:
        sys.exit(f"availability goals missed: {', '.join(missed)}")


if __name__ == "__main__":
    main()
