"""Traffic a visitor sends while an operation runs: a loop of GET requests on its own
thread, bounded in time, stopping by itself, and how its answers are read (the
zero-downtime, upgrade-gate and real-upgrade tests share it)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit

import requests

T = TypeVar("T")

PATHS = ("/", "/api/v1/media")

#: seconds a request of the loop may take before it counts as failed
PATIENCE = 90


class Loop(threading.Thread):
    """Requests in turn on ``paths`` (GET, :meth:`fetch`) until stopped, or after
    ``limit`` seconds at most."""

    paths: tuple[str, ...] = PATHS

    def __init__(self, base: str, limit: float = 400) -> None:
        super().__init__(daemon=True)
        self.base, self.limit = base, limit
        self.stopped = threading.Event()
        self.answers: list[tuple[float, float, str, int | str]] = []  # start, end, path, status

    def run(self) -> None:
        deadline = time.monotonic() + self.limit
        for path in itertools.cycle(self.paths):
            if self.stopped.is_set() or time.monotonic() > deadline:
                return
            started = time.monotonic()
            outcome = self.fetch(path)
            self.answers.append((started, time.monotonic(), path, outcome))
            time.sleep(0.1)

    def fetch(self, path: str) -> int | str:
        """GET ``path``: what the answer counts as (:meth:`outcome`), or the error's name."""
        try:
            # a web container that starts takes requests as soon as uWSGI listens, and
            # they wait while it loads the app: over 30 s on a machine busy with CI.
            # They are answered, so the visitor's patience is set above that; the
            # slowest answer is in every report (README: Restarts and crashes)
            return self.outcome(requests.get(self.base + path, timeout=PATIENCE))
        except requests.RequestException as error:
            return type(error).__name__

    def outcome(self, response: requests.Response) -> int | str:
        """What an answer counts as: its status (a subclass may look further)."""
        return response.status_code

    def failed(self) -> list[tuple[float, float, str, int | str]]:
        return [a for a in self.answers if not isinstance(a[3], int) or a[3] >= 500]

    def during(self, start: float, end: float) -> list[tuple[float, float, str, int | str]]:
        return [a for a in self.answers if start <= a[0] and a[1] <= end]

    def slowest(self) -> float:
        return max(end - start for start, end, _, _ in self.answers)


@contextmanager
def requests_meanwhile(stack, lead: float = 3, *, kind: type[Loop] | None = None,
                       limit: float = 400):  # fmt: skip
    """A running loop (``kind``, Loop by default) for ``limit`` seconds at most, ``lead``
    seconds of answers before and after the block."""
    loop = (kind or Loop)(stack.base, limit)
    loop.start()
    time.sleep(lead)
    try:
        yield loop
        time.sleep(lead)
    finally:
        loop.stopped.set()
        loop.join(timeout=60)


#: the longest the published port may refuse connections while nginx is replaced
SWAP_SECONDS = 3.0


class Answers(Loop):
    """The GET loop; a 503 counts only with Retry-After and the page's type, else it is a
    failure of its own kind."""

    def outcome(self, response: requests.Response) -> int | str:
        if response.status_code != 503:
            return response.status_code
        api = urlsplit(response.url).path.startswith("/api/")
        kind = "application/json" if api else "text/html"
        page = response.headers.get("Content-Type", "").startswith(kind)
        return 503 if page and response.headers.get("Retry-After") == "30" else "503 not the page"


def the_swap(loop: Loop, start: float, end: float) -> list:
    """The refused connections of the nginx swap: every ConnectionError when they come in
    one run (no other answer between them), within SWAP_SECONDS, while the upgrade ran;
    else none (each is then a failure)."""
    refused = [i for i, a in enumerate(loop.answers) if a[3] == "ConnectionError"]
    if not refused or refused[-1] - refused[0] + 1 != len(refused):
        return []
    first, last = loop.answers[refused[0]], loop.answers[refused[-1]]
    brief = last[1] - first[0] <= SWAP_SECONDS
    return [loop.answers[i] for i in refused] if brief and start <= first[0] <= end else []


def outside_the_swap(loop: Loop, start: float, end: float) -> list:
    """The failed answers but the 503 page (Answers counts a 503 without it as a failure
    of its own) and the nginx swap's refused connections."""
    swap = the_swap(loop, start, end)
    return [a for a in loop.failed() if a[3] != 503 and a not in swap]


def report(loop: Loop, start: float, end: float) -> str:
    counts: dict = {}
    for answer in loop.during(start, end):
        counts[answer[3]] = counts.get(answer[3], 0) + 1
    outage = [a for a in loop.answers if a[3] == 503]
    longest = outage[-1][1] - outage[0][0] if outage else 0.0
    swap = the_swap(loop, start, end)
    took = swap[-1][1] - swap[0][0] if swap else 0.0
    return (f"{len(loop.during(start, end))} requests during {end - start:.0f} s: {counts}; "
            f"503 page from first to last {longest:.1f} s; {len(swap)} refused in "
            f"{took:.1f} s at the nginx swap; slowest {loop.slowest():.1f} s")  # fmt: skip


def under_answers(base: str, action: Callable[[], T], *, limit: float = 900, lead: float = 3,
                  loop: Answers | None = None) -> tuple[T, Answers, float, float]:  # fmt: skip
    """``action()`` while an Answers loop (``loop``, not yet started, or one on ``base``)
    runs, ``lead`` seconds of answers before and after it: (what it returned, the loop,
    its start and end on the loop's clock)."""
    loop = loop or Answers(base, limit=limit)
    loop.start()
    time.sleep(lead)
    start = time.monotonic()
    try:
        outcome = action()
    finally:
        end = time.monotonic()
        time.sleep(lead)
        loop.stopped.set()
        loop.join(timeout=120)
    return outcome, loop, start, end
