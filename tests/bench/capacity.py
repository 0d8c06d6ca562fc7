"""How many viewers one host serves with p99 under GOAL_MS, on a real MediaCMS tree.

    python tests/bench/capacity.py        (MEDIACMS_ENV_FILE names the tree's settings)

A viewer, one thread with one keep-alive connection to the stack's nginx on 127.0.0.1,
does what a browser does for a video, over and over: the home page, the media page, the
media's API answer, the HLS master and 720p playlists, then every segment of the video
at the pace it plays (one per segment's duration, 4 s in MediaCMS). Viewers start spread
over one segment's time, so they do not ask in step. Steps of VIEWERS; in each, a new
upload is being transcoded by the workers meanwhile (upload and encodings compete for
the same processors as the visitors, as on a live site). The first step whose p99 is
over GOAL_MS, or where any request failed, ends the search: the step before it is the
capacity. Client and stack share this host, as they share it in every bench.

The stack is throwaway and removed at the end; all traffic goes to its own nginx, in
bounded steps.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.acceptance.client import make_clip, media_state, wait_ready
from tests.e2e.conftest import ADMIN_PASSWORD, new_deployment

GOAL_MS = 500
VIEWERS = (20, 40, 80, 160, 320, 640)
SEGMENT = 4.0  # seconds of video per HLS segment (MediaCMS runs mp4hls with 4)
MEASURE = 30.0  # seconds measured per step, after the viewers have started
CLIP = 16  # seconds: the video watched


def report(name: str, value: str) -> None:
    print(f"{name:<62} {value}", flush=True)


class Viewer(threading.Thread):
    """Watches the video until `stop`; every request is recorded as (start, seconds,
    status), status being the HTTP status or the error's name."""

    def __init__(self, port: int, pages: list[str], segments: list[str], delay: float,
                 stop: threading.Event, record: list) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.port, self.pages, self.segments = port, pages, segments
        self.delay, self.stop, self.record = delay, stop, record
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str) -> None:
        start = time.monotonic()
        try:
            self.conn.request("GET", path)
            answer = self.conn.getresponse()
            answer.read()
            status: int | str = answer.status
        except (OSError, http.client.HTTPException) as error:
            status = type(error).__name__
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.record.append((start, time.monotonic() - start, status))

    def run(self) -> None:
        if self.stop.wait(self.delay):
            return
        while not self.stop.is_set():
            for path in self.pages:
                self.get(path)
            for path in self.segments:
                began = time.monotonic()
                self.get(path)
                if self.stop.wait(max(0.0, SEGMENT - (time.monotonic() - began))):
                    break
        self.conn.close()


def watch_plan(stack, token: str) -> tuple[list[str], list[str]]:
    """The pages a viewer asks for first, and the video's 720p segments in order."""
    hls = media_state(stack, token)["hls_info"]
    master, playlist = (urlsplit(hls[key]).path for key in ("master_file", "720_playlist"))
    listing = requests.get(stack.url(playlist), timeout=30)
    listing.raise_for_status()
    segments = [urlsplit(urljoin(stack.url(playlist), line)).path
                for line in listing.text.splitlines() if line and not line.startswith("#")]  # fmt: skip
    assert segments, listing.text[:500]
    return ["/", f"/view?m={token}", f"/api/v1/media/{token}", master, playlist], segments


def upload(stack, clip: bytes, done: list) -> None:
    """One upload, whose encodings then run in the workers."""
    answer = requests.post(stack.url("/api/v1/media"), auth=("admin", ADMIN_PASSWORD),
                           data={"title": "capacity"}, files={"media_file": ("c.mp4", clip)},
                           timeout=300)  # fmt: skip
    done.append(answer.status_code)


def step(stack, viewers: int, pages: list[str], segments: list[str], clip: bytes) -> dict:
    record: list = []
    stop = threading.Event()
    uploaded: list = []
    uploader = threading.Thread(target=upload, args=(stack, clip, uploaded), daemon=True)
    uploader.start()
    crowd = [Viewer(stack.port, pages, segments, SEGMENT * i / viewers, stop, record)
             for i in range(viewers)]  # fmt: skip
    for viewer in crowd:
        viewer.start()
    start = time.monotonic() + SEGMENT  # every viewer has started
    time.sleep(SEGMENT + MEASURE)
    stop.set()
    for viewer in crowd:
        viewer.join(timeout=60)
    uploader.join(timeout=300)
    window = [r for r in record if start <= r[0] < start + MEASURE]
    times = sorted(seconds * 1000 for _, seconds, _ in window)
    failed = [status for *_, status in window if not isinstance(status, int) or status >= 400]
    return {"viewers": viewers, "requests": len(window), "rps": len(window) / MEASURE,
            "p50": statistics.median(times), "p99": times[int(len(times) * 0.99) - 1],
            "slowest": times[-1], "failed": len(failed), "statuses": sorted(set(map(str, failed))),
            "upload": uploaded[0] if uploaded else "no answer"}  # fmt: skip


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    stack = new_deployment(home, f"mediacms-bench-capacity-{os.getpid()}")
    capacity = 0
    try:
        up = stack.invoke("up", check=False)
        if up.returncode != 0:
            sys.exit(f"invoke up failed:\n{up.stdout[-2000:]}\n{up.stderr[-2000:]}")
        clip = make_clip(stack, seconds=CLIP)
        made = requests.post(stack.url("/api/v1/media"), auth=("admin", ADMIN_PASSWORD),
                             data={"title": "watched"}, files={"media_file": ("w.mp4", clip)},
                             timeout=300)  # fmt: skip
        made.raise_for_status()
        token = made.json()["friendly_token"]
        wait_ready(stack, token, poll=1)
        pages, segments = watch_plan(stack, token)
        for viewers in VIEWERS:
            got = step(stack, viewers, pages, segments, clip)
            report(f"{viewers} viewers, an upload transcoding meanwhile",
                   f"{got['rps']:.1f} req/s, p50 {got['p50']:.0f} ms, p99 {got['p99']:.0f} ms, "
                   f"slowest {got['slowest']:.0f} ms, {got['failed']} failed "
                   f"{got['statuses']}, upload answered {got['upload']}")  # fmt: skip
            if got["p99"] > GOAL_MS or got["failed"]:
                break
            capacity = viewers
    finally:
        stack.dc("down", "--volumes", "--remove-orphans", check=False)
        shutil.rmtree(home, ignore_errors=True)
    report(f"capacity: viewers served with p99 under {GOAL_MS} ms and none failed",
           f"{capacity}" + ("" if capacity < VIEWERS[-1] else " (or more: the last step passed)"))  # fmt: skip
    print(json.dumps({"tree": stack.settings.version, "capacity": capacity}))


if __name__ == "__main__":
    main()
