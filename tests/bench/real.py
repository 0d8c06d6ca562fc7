"""Benchmarks on a real MediaCMS tree's images, measured side by side in one run.

    python tests/bench/real.py        (MEDIACMS_ENV_FILE names the tree's settings)

- image sizes of web, worker and nginx against the seed's 800 / 800 / 50 MB;
- upload to every rendition ready (and to thumbnail, poster and sprites ready too),
  against the same ffmpeg commands (read back from MediaCMS's own Encoding rows) run
  one after the other in the celery_long container;
- a static file's throughput through our nginx image against a bare nginx (the same
  binary, a minimal configuration) serving the same file;
- the media gate: 1 KiB range requests of a video's original through the gate (private,
  as its owner; public, anonymous) against the same requests with the gate off (and an
  ungated logo for reference), with nginx keeping the gate's decisions and with that
  cache off (tests/bench/gate.py).

Throughput is measured as tests/bench/load.py says (wrk to the container's address,
client and server on their own CPUs). Exits non-zero when a ratio is below its goal
(issue 21): transcoding 0.95 of ffmpeg alone, the static file 1.0 of the bare nginx, the
media gate with its cache 0.8 of the same file without the gate.

The stack is throwaway and removed at the end; all traffic goes to its containers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mediacms_stack.stack import model
from tests.acceptance.client import login, make_clip, media_state, set_state, wait_ready
from tests.bench.gate import media_gate
from tests.bench.load import PINNED, address, nginx_url, site_name, wrk
from tests.e2e.conftest import ADMIN_PASSWORD, new_deployment

SEED_MB = {"web": 800, "worker": 800, "nginx": 50}
ROUNDS = 3
TRANSCODING_GOAL = 0.95  # upload to every rendition ready / ffmpeg alone
STATIC_GOAL = 1.0  # our nginx / a bare nginx


def report(name: str, value: str) -> None:
    print(f"{name:<62} {value}", flush=True)


def image_sizes(settings) -> None:
    names = model.ImageNames.from_settings(settings)
    for target, seed in SEED_MB.items():
        size = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}",
                               names.ref(target)], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
        mb = int(size) / 1e6
        report(
            f"size {target} ({names.ref(target)})",
            f"{mb:7.1f} MB  ratio to seed {seed} MB: {mb / seed:.2f}",
        )


BENCH_CLIP = 24  # seconds of the transcoded clip: every figure in the notes used 24


def transcoding(stack) -> tuple[str, bool]:
    """Upload to every rendition ready, against MediaCMS's own ffmpeg commands run directly:
    the media's token, and whether the ratio reached its goal."""
    clip = make_clip(stack, seconds=BENCH_CLIP)
    started, wall = time.monotonic(), time.time()  # containers share this host's clock
    response = requests.post(stack.url("/api/v1/media"), auth=("admin", ADMIN_PASSWORD),
                             data={"title": "bench"}, files={"media_file": ("b.mp4", clip)},
                             timeout=300)  # fmt: skip
    response.raise_for_status()
    posted = time.monotonic() - started  # MediaCMS runs media_init inside the upload
    token = response.json()["friendly_token"]
    state = wait_ready(stack, token, extras=False, poll=1)
    polled = time.monotonic() - started
    assert state["encoding_status"] == "success", state
    wait_ready(stack, token, poll=1)
    everything = time.monotonic() - started
    # Each encoding ran in a temporary folder of TEMP_DIRECTORY, gone since: its commands
    # run again in a new one (on the scratch volume, like the pipeline's).
    script = (
        "import ast, json, os, subprocess, sys, tempfile, time\n"
        "from django.conf import settings\n"
        "from files.models import Encoding\n"
        f"rows = Encoding.objects.filter(media__friendly_token='{token}', status='success')\n"
        "total = 0.0\n"
        "rows = [row for row in rows if row.commands]  # the original's row runs nothing\n"
        "for row in rows:\n"
        "    old = os.path.dirname(row.temp_file)\n"
        "    alone = 0.0\n"
        "    with tempfile.TemporaryDirectory(dir=settings.TEMP_DIRECTORY) as new:\n"
        "        for argv in ast.literal_eval(row.commands):\n"
        "            argv = [str(a).replace(old, new) for a in argv]\n"
        "            start = time.monotonic()\n"
        "            done = subprocess.run(argv, capture_output=True, text=True, cwd=new)\n"
        "            alone += time.monotonic() - start\n"
        "            if done.returncode:\n"
        "                sys.exit(f'{argv}: {done.stderr[-1500:]}')\n"
        "    total += alone\n"
        "    print('ROW', json.dumps([row.profile.name, row.add_date.timestamp(),\n"
        "                             row.update_date.timestamp(), alone]))\n"
        "print('DIRECT', len(rows), total)\n"
    )
    done = stack.dc("exec", "-T", "celery_long", "python", "manage.py", "shell", "-c", script,
                    check=False)  # fmt: skip
    if done.returncode:
        raise AssertionError(f"running the encodings' ffmpeg commands failed:\n{done.stderr}")
    out = done.stdout
    _, renditions, direct = re.search(r"DIRECT (\d+) ([\d.]+)", out)[0].split()
    rows = sorted((json.loads(line[4:]) for line in out.splitlines() if line.startswith("ROW ")),
                  key=lambda row: row[2])  # fmt: skip
    # Ready when the last rendition's row was saved (the same task then marks the media
    # done): the API, polled every second, tells it up to a second later.
    pipeline = max(row[2] for row in rows) - wall
    clip_s = media_state(stack, token)["duration"]
    ratio = float(direct) / pipeline
    report(f"transcode {clip_s:.0f} s 720p clip: upload to {renditions} renditions ready",
           f"pipeline {pipeline:.1f} s, ffmpeg alone {float(direct):.1f} s: "
           f"ratio {ratio:.2f} (goal {TRANSCODING_GOAL})")  # fmt: skip
    report("  ... seen ready through the API (polled every second)", f"{polled:.1f} s")
    report("  ... and thumbnail, poster and sprites ready too (polled)",
           f"{everything:.1f} s: ratio {float(direct) / everything:.2f}")  # fmt: skip
    where_the_time_goes(rows, wall, posted, pipeline)
    for service in ("celery_long", "celery_short"):  # the same cores as the encodings
        others = tasks_beside(stack, service, wall, wall + pipeline)
        report(f"  MediaCMS's other tasks in {service} meanwhile (run time)",
               ", ".join(f"{name} {took:.1f} s" for name, took in others.items()) or "none")  # fmt: skip
    return token, ratio >= TRANSCODING_GOAL


FINISHED = re.compile(r"^(\S+) .*Task (\S+)\[[0-9a-f-]+\] succeeded in ([\d.]+)s", re.M)


def tasks_beside(stack, service: str, start: float, end: float) -> dict[str, float]:
    """Seconds each task other than the encodings ran in ``service`` between start and
    end (epoch seconds), from its worker's log: what shared the encodings' slots."""
    log = stack.dc("logs", "--no-log-prefix", "--timestamps", service).stdout
    took: dict[str, float] = {}
    for stamp, name, seconds in FINISHED.findall(log):
        done = datetime.fromisoformat(stamp).timestamp()
        if name != "encode_media" and start <= done <= end + 1:
            took[name] = took.get(name, 0.0) + float(seconds)
    return took


def where_the_time_goes(rows: list, wall: float, posted: float, pipeline: float) -> None:
    """The pipeline's time, cut where MediaCMS's own rows say: the upload request (in
    which MediaCMS runs media_init: md5sum, ffprobe, thumbnails), until the first
    encoding was queued; each encoding's slot in celery_long (from the end of the task
    before it, one at a time) against its commands alone: the difference is what ran
    beside it (thumbnails on celery_short) or in the same slot before it (the sprites
    task, which MediaCMS queues on long_tasks too); and the rest (hand-offs between
    tasks)."""
    queued = min(row[1] for row in rows) - wall
    report("  the upload request (MediaCMS's media_init runs inside it)", f"{posted:.1f} s")
    report("  until the first encoding was queued", f"{queued:.1f} s")
    previous_end, ran = 0.0, 0.0
    for name, added, ended, alone in rows:
        began = max(added, previous_end)  # one encoding at a time (CELERY_LONG_CONCURRENCY=1)
        ran += ended - began
        report(f"  encoding {name}: its slot in celery_long vs its commands alone",
               f"{ended - began:.1f} vs {alone:.1f} s")  # fmt: skip
        previous_end = ended
    report("  the rest (hand-offs between tasks)", f"{pipeline - queued - ran:.1f} s")


def bare_nginx(stack, path: str) -> tuple[str, str]:
    """The nginx image's own binary with a minimal configuration, serving the same file."""
    image = model.ImageNames.from_settings(stack.settings).ref("nginx")
    folder = Path(tempfile.mkdtemp(prefix="bare-nginx-"))
    body = requests.get(stack.url(path), timeout=30).content
    (folder / Path(path).name).write_bytes(body)
    (folder / "nginx.conf").write_text(
        "worker_processes auto; pid /tmp/nginx.pid; error_log /dev/stderr warn;\n"
        "events { worker_connections 1024; }\n"
        "http { include /etc/nginx/mime.types; sendfile on; access_log off;\n"
        "  client_body_temp_path /tmp/b; proxy_temp_path /tmp/p; fastcgi_temp_path /tmp/f;\n"
        "  uwsgi_temp_path /tmp/u; scgi_temp_path /tmp/s;\n"
        "  server { listen 8080; root /srv; } }\n"
    )
    folder.chmod(0o755)
    name = f"bench-bare-nginx-{os.getpid()}"
    pin = ["--cpuset-cpus", "1"] if PINNED else []
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, *pin,
                    "-v", f"{folder}:/srv:ro", "--entrypoint", "nginx", image,
                    "-c", "/srv/nginx.conf", "-g", "daemon off;"], check=True,
                   capture_output=True)  # fmt: skip
    url = f"http://{address(name)}:8080/{Path(path).name}"
    for _ in range(50):
        try:
            if requests.get(url, timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.2)
    return name, url


def static_throughput(stack) -> bool:
    """A static file through our nginx against the bare nginx: whether it reached its goal."""
    home = requests.get(stack.url("/"), timeout=30).text
    path = sorted(set(re.findall(r'"(/static/[^"?]+\.css)"', home)))[0]
    name, bare = bare_nginx(stack, path)
    try:
        ours, plain = [], []
        served = nginx_url(stack) + path
        for _ in range(ROUNDS):  # alternated, so drift hits both alike
            plain.append(wrk(site_name(stack), bare))
            ours.append(wrk(site_name(stack), served))
        ratio = statistics.median(ours) / statistics.median(plain)
        report(f"static {path}: our nginx vs bare nginx (req/s, median of {ROUNDS})",
               f"{statistics.median(ours):.0f} vs {statistics.median(plain):.0f}: "
               f"ratio {ratio:.2f} (goal {STATIC_GOAL})")  # fmt: skip
        return ratio >= STATIC_GOAL
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def gate(stack, token: str) -> bool:
    """The media gate (tests/bench/gate.py): the transcoded clip, public, as anyone, and a
    second upload made private, as its owner."""
    nginx_image = model.ImageNames.from_settings(stack.settings).ref("nginx")
    label = subprocess.run(["docker", "image", "inspect", "--format",
                            '{{ index .Config.Labels "io.mediacms.media-auth" }}', nginx_image],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    if label != "on":  # nginx answers /api/v1/media-auth itself (404): ask the image
        report("media gate", "skipped: this tree has no /api/v1/media-auth")
        return True
    response = requests.post(stack.url("/api/v1/media"), auth=("admin", ADMIN_PASSWORD),
                             data={"title": "bench private"},
                             files={"media_file": ("p.mp4", make_clip(stack, seconds=2))},
                             timeout=300)  # fmt: skip
    response.raise_for_status()
    private = response.json()["friendly_token"]
    # its encodings do not compete with the measure (a 2 s clip gets no sprites)
    wait_ready(stack, private, extras=False, poll=1)
    # asked while both are public: the API answers no stranger about a private one
    path = {t: urlsplit(media_state(stack, t)["original_media_url"]).path for t in (token, private)}
    set_state(stack, private, "private")
    session = login(stack, "admin", ADMIN_PASSWORD)
    cookie = "Cookie: " + "; ".join(f"{k}={v}" for k, v in session.cookies.items())
    return media_gate(stack, {
        "private original, its owner": (path[private], (cookie,)),
        "public original, anonymous": (path[token], ()),
    }, "/media/userlogos/user.jpg")  # fmt: skip


def main() -> None:
    if not shutil.which("wrk"):
        sys.exit("wrk is missing (apt-get install wrk)")
    home = Path(tempfile.mkdtemp(prefix="bench-real-"))
    stack = new_deployment(home, f"mediacms-bench-real-{os.getpid()}")
    image_sizes(stack.settings)
    try:
        up = stack.invoke("up", check=False)
        if up.returncode != 0:
            sys.exit(f"invoke up failed:\n{up.stdout[-2000:]}\n{up.stderr[-2000:]}")
        token, transcoded = transcoding(stack)
        static = static_throughput(stack)
        gated = gate(stack, token)
    finally:
        stack.dc("down", "--volumes", "--remove-orphans", check=False)
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps({"tree": stack.settings.version}))
    missed = [what for what, reached in (("transcoding", transcoded), ("static file", static),
                                         ("media gate", gated)) if not reached]  # fmt: skip
    if missed:
        sys.exit(f"below its goal: {', '.join(missed)}")


if __name__ == "__main__":
    main()
