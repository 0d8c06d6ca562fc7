"""How many viewers one host serves with p99 under GOAL_MS, on a real MediaCMS tree.

    python tests/bench/capacity.py        (MEDIACMS_ENV_FILE names the tree's settings)

A viewer, one thread with one keep-alive connection to the stack's nginx on 127.0.0.1,
does what a browser does for a video, over and over: the home page, the media page, the
media's API answer, the HLS master and 720p playlists, then every segment of the video
at the pace it plays (one per segment's duration, 4 s in MediaCMS). Images built without
Bento4 make no HLS: there the player reads the 720p rendition itself, and a viewer asks
for it in Range requests of 4 s of video each, at the same pace. Viewers start spread
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
VIEWERS = (20, 40, 80, 120, 160, 240, 320, 480, 640)
SEGMENT = 4.0  # seconds of video per HLS segment (MediaCMS runs mp4hls with 4)
MEASURE = 30.0  # seconds measured per step, after the viewers have started
CLIP = 16  # seconds: the video watched
MP4HLS = "/home/mediacms.io/bento4/bin/mp4hls"  # where the images put Bento4, when given


def report(name: str, value: str) -> None:
    print(f"{name:<62} {value}", flush=True)


class Viewer(threading.Thread):
    """Watches the video until `stop`; every request is recorded as (start, seconds,
    status, kind), status being the HTTP status or the error's name, kind "page" or
    "video"."""

    def __init__(self, port: int, pages: list[str], segments: list, delay: float,
                 stop: threading.Event, record: list) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.port, self.pages, self.segments = port, pages, segments
        self.delay, self.stop, self.record = delay, stop, record
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str, headers: dict[str, str], kind: str) -> None:
        start = time.monotonic()
        try:
            self.conn.request("GET", path, headers=headers)
            answer = self.conn.getresponse()
            answer.read()
            status: int | str = answer.status
        except (OSError, http.client.HTTPException) as error:
            status = type(error).__name__
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.record.append((start, time.monotonic() - start, status, kind))

    def run(self) -> None:
        if self.stop.wait(self.delay):
            return
        while not self.stop.is_set():
            for path in self.pages:
                self.get(path, {}, "page")
            for path, headers in self.segments:
                began = time.monotonic()
                self.get(path, headers, "video")
                if self.stop.wait(max(0.0, SEGMENT - (time.monotonic() - began))):
                    break
        self.conn.close()


def watch_plan(stack, token: str) -> tuple[list[str], list[tuple[str, dict[str, str]]]]:
    """The pages a viewer asks for first, and the video's 720p pieces in playing order
    (a path and its request headers each)."""
    pages = ["/", f"/view?m={token}", f"/api/v1/media/{token}"]
    hls = stack.dc("exec", "-T", "web", "test", "-x", MP4HLS, check=False).returncode == 0
    if not hls:
        state = media_state(stack, token)
        video = urlsplit(state["encodings_info"]["720"]["h264"]["url"]).path
        size = int(requests.head(stack.url(video), timeout=30).headers["Content-Length"])
        piece = int(size * SEGMENT / state["duration"])
        ranges = [{"Range": f"bytes={start}-{min(start + piece, size) - 1}"}
                  for start in range(0, size, piece)]  # fmt: skip
        return pages, [(video, headers) for headers in ranges]
    deadline = time.monotonic() + 300  # the HLS files are made after the renditions
    while not (hls_info := media_state(stack, token)["hls_info"]).get("master_file"):
        assert time.monotonic() < deadline, f"no HLS for {token} within 300 s"
        time.sleep(1)
    master, playlist = (urlsplit(hls_info[key]).path for key in ("master_file", "720_playlist"))
    listing = requests.get(stack.url(playlist), timeout=30)
    listing.raise_for_status()
    segments = [urlsplit(urljoin(stack.url(playlist), line)).path
                for line in listing.text.splitlines() if line and not line.startswith("#")]  # fmt: skip
    assert segments, listing.text[:500]
    return [*pages, master, playlist], [(path, {}) for path in segments]


def upload(stack, clip: bytes, title: str) -> requests.Response:
    """One upload as the admin, whose encodings then run in the workers."""
    return requests.post(stack.url("/api/v1/media"), auth=("admin", ADMIN_PASSWORD),
                         data={"title": title}, files={"media_file": (f"{title}.mp4", clip)},
                         timeout=300)  # fmt: skip


def step(stack, viewers: int, pages: list[str], segments: list, clip: bytes) -> dict:
    record: list = []
    stop = threading.Event()
    uploaded: list = []
    uploader = threading.Thread(
        target=lambda: uploaded.append(upload(stack, clip, "meanwhile").status_code), daemon=True
    )
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
    times = sorted(seconds * 1000 for _, seconds, _, _ in window)
    failed = [status for _, _, status, _ in window if not isinstance(status, int) or status >= 400]
    return {"viewers": viewers, "requests": len(window), "rps": len(window) / MEASURE,
            "p50": statistics.median(times), "p99": p99(times), "slowest": times[-1],
            "pages p99": p99([r[1] * 1000 for r in window if r[3] == "page"]),
            "video p99": p99([r[1] * 1000 for r in window if r[3] == "video"]),
            "failed": len(failed), "statuses": sorted(set(map(str, failed))),
            "upload": uploaded[0] if uploaded else "no answer"}  # fmt: skip


def p99(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)] if ordered else 0.0


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    stack = new_deployment(home, f"mediacms-bench-capacity-{os.getpid()}")
    capacity = 0
    try:
        up = stack.invoke("up", check=False)
        if up.returncode != 0:
            sys.exit(f"invoke up failed:\n{up.stdout[-2000:]}\n{up.stderr[-2000:]}")
        clip = make_clip(stack, seconds=CLIP)
        made = upload(stack, clip, "watched")
        made.raise_for_status()
        token = made.json()["friendly_token"]
        wait_ready(stack, token, poll=1)
        pages, segments = watch_plan(stack, token)
        report("a viewer's requests per view", f"{len(pages)} pages, then {len(segments)} "
               f"pieces of {SEGMENT:.0f} s of video ({segments[0][0]})")  # fmt: skip
        for viewers in VIEWERS:
            got = step(stack, viewers, pages, segments, clip)
            report(f"{viewers} viewers, an upload transcoding meanwhile",
                   f"{got['rps']:.1f} req/s, p50 {got['p50']:.0f} ms, p99 {got['p99']:.0f} ms "
                   f"(pages {got['pages p99']:.0f}, video {got['video p99']:.0f}), slowest "
                   f"{got['slowest']:.0f} ms, {got['failed']} failed "
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
