"""Benchmarks on a real MediaCMS tree's images, measured side by side in one run.

    python tests/bench/real.py        (MEDIACMS_ENV_FILE names the tree's settings)

- image sizes of web, worker and nginx against the seed's 800 / 800 / 50 MB;
- upload to every rendition ready (and to thumbnail, poster and sprites ready too),
  against the same ffmpeg commands (read back from MediaCMS's own Encoding rows) run
  one after the other in the celery_long container; where the difference goes (every
  task of the workers, timed from their logs); and the same with one and with two
  celery_long processes, alternated (the goal is judged on the median of the uploads
  made with the default);
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

import dataclasses
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

from mediacms_stack.stack import config, model
from tests.acceptance.client import login, make_clip, media_state, set_state, wait_ready
from tests.bench.gate import media_gate
from tests.bench.load import PINNED, address, nginx_url, site_name, wrk
from tests.e2e.conftest import ADMIN_PASSWORD, new_deployment

SEED_MB = {"web": 800, "worker": 800, "nginx": 50}
ROUNDS = 3  # uploads with one and with two celery_long processes
STATIC_ROUNDS = 8  # of 3 s each, our nginx and the bare one in turn
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


@dataclasses.dataclass(frozen=True)
class Transcoded:
    """One upload timed: wall is when it began (epoch seconds), the other times are
    seconds from then; ``out`` is what rerunning its ffmpeg commands printed."""

    token: str
    wall: float
    posted: float
    polled: float
    everything: float
    out: str
    renditions: int
    direct: float  # its renditions' ffmpeg commands, run one after another
    alone: list  # [profile, added, last saved, its commands' seconds], in finishing order
    ran: list[Task]  # celery_long's tasks meanwhile
    last: float  # when the last encoding task ended

    @property
    def pipeline(self) -> float:
        return self.last - self.wall

    @property
    def ratio(self) -> float:
        return self.direct / self.pipeline


def long_processes(stack) -> str:
    """celery_long's processes as the stack's .env sets them (2: the compose default)."""
    return stack.settings.get("CELERY_LONG_CONCURRENCY", "2")


def transcode(stack) -> Transcoded:
    """Upload a clip, wait for every rendition (and the pictures), then run its ffmpeg
    commands again, one after another, in celery_long."""
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
        f"every = Encoding.objects.filter(media__friendly_token='{token}')\n"
        "total = 0.0\n"
        "rows = [row for row in every if row.status == 'success' and row.commands]\n"
        "for row in every:  # the original's row runs no command\n"
        "    if row not in rows:\n"
        "        print('OTHER', json.dumps([row.profile.name, row.status,\n"
        "                                   row.update_date.timestamp()]))\n"
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
    alone = [json.loads(line[4:]) for line in out.splitlines() if line.startswith("ROW ")]
    alone.sort(key=lambda row: row[2])  # the order they finished in, one at a time
    ran = worker_tasks(stack, "celery_long", wall, wall + polled + 1)
    # Ready when the last encoding task ended (each marks its row, and the last one the
    # media, done): the API, polled every second, tells it up to 1 s later.
    last = max(task.end for task in ran if task.name == "encode_media")
    return Transcoded(token, wall, posted, polled, everything, out, int(renditions),
                      float(direct), alone, ran, last)  # fmt: skip


def transcoding(stack) -> Transcoded:
    """Upload to every rendition ready, against MediaCMS's own ffmpeg commands run directly,
    and where the difference goes."""
    run = transcode(stack)
    clip_s = media_state(stack, run.token)["duration"]
    report(f"transcode {clip_s:.0f} s 720p clip: upload to {run.renditions} renditions ready",
           f"pipeline {run.pipeline:.1f} s, ffmpeg alone {run.direct:.1f} s: "
           f"ratio {run.ratio:.2f}")  # fmt: skip
    report("  ... seen ready through the API (polled every second)", f"{run.polled:.1f} s")
    report("  ... and thumbnail, poster and sprites ready too (polled)",
           f"{run.everything:.1f} s: ratio {run.direct / run.everything:.2f}")  # fmt: skip
    report("  the upload request (MediaCMS's media_init runs inside it)", f"{run.posted:.1f} s")
    first = min(task.start for task in run.ran)
    report("  until celery_long began its first task", f"{first - run.wall:.1f} s")
    # Each rendition's task: the one that ended soonest after its row was last saved.
    encodes = [min((task for task in run.ran if task.name == "encode_media" and task.end >= row[2]),
                   key=lambda task: task.end) for row in run.alone]  # fmt: skip
    at_once = long_processes(stack)
    for task, (name, _, _, commands) in zip(encodes, run.alone, strict=True):
        report(f"  encoding {name}: its task ({at_once} at a time) vs its commands alone",
               f"{task.end - task.start:.1f} vs {commands:.1f} s")  # fmt: skip
    for line in run.out.splitlines():  # rows whose tasks made no rendition, and why
        if line.startswith("OTHER "):
            name, status, _ = json.loads(line[6:])
            report(f"  encoding {name}: no rendition", status)
    until = [task for task in run.ran if task.end <= run.last]
    others: dict[str, float] = {}
    for task in until:
        if task not in encodes:
            others[task.name] = others.get(task.name, 0.0) + task.end - task.start
    report("  MediaCMS's other tasks in celery_long until then",
           ", ".join(f"{name} {took:.1f} s" for name, took in others.items()) or "none")  # fmt: skip
    report("  celery_long running no task (hand-offs)",
           f"{run.last - first - covered(until):.1f} s")  # fmt: skip
    return run


def long_concurrency(stack) -> dict[str, list[Transcoded]]:
    """The same upload with one and with two celery_long processes, alternated for
    ROUNDS rounds (celery_long recreated between them): what sized the default. The
    runs, by the number of processes."""
    default = long_processes(stack)
    runs: dict[str, list[Transcoded]] = {"1": [], "2": []}
    try:
        for index in range(ROUNDS):
            for processes in ("1", "2") if index % 2 == 0 else ("2", "1"):
                config.update(stack.settings, {"CELERY_LONG_CONCURRENCY": processes})
                stack.dc("up", "--detach", "--wait", "celery_long")
                runs[processes].append(transcode(stack))
    finally:
        config.update(stack.settings, {"CELERY_LONG_CONCURRENCY": default})
        stack.dc("up", "--detach", "--wait", "celery_long")
    for processes, measured in runs.items():
        pipelines = ", ".join(f"{run.pipeline:.1f}" for run in measured)
        ratios = ", ".join(f"{run.ratio:.2f}" for run in measured)
        report(f"  celery_long with {processes} process(es), {ROUNDS} rounds",
               f"pipeline {pipelines} s: ratio to ffmpeg alone {ratios}")  # fmt: skip
    paired = [two.pipeline / one.pipeline for one, two in zip(runs["1"], runs["2"], strict=True)]
    report("  two processes' pipeline / one's, round by round",
           ", ".join(f"{ratio:.2f}" for ratio in paired))  # fmt: skip
    return runs


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    start: float  # epoch seconds
    end: float


def covered(tasks: list[Task]) -> float:
    """Seconds during which at least one of ``tasks`` ran (they overlap with
    CELERY_LONG_CONCURRENCY above 1)."""
    total, reach = 0.0, float("-inf")
    for task in sorted(tasks, key=lambda task: task.start):
        total += max(0.0, task.end - max(task.start, reach))
        reach = max(reach, task.end)
    return total


FINISHED = re.compile(r"^(\S+) .*Task (\S+)\[[0-9a-f-]+\] succeeded in ([\d.]+)s", re.M)


def worker_tasks(stack, service: str, start: float, end: float) -> list[Task]:
    """The tasks ``service`` finished between start and end (epoch seconds), in order,
    from its worker's log (the engine's time of each "succeeded in" line and the run
    time it gives)."""
    log = stack.dc("logs", "--no-log-prefix", "--timestamps", service).stdout
    tasks = []
    for stamp, name, seconds in FINISHED.findall(log):
        done = datetime.fromisoformat(stamp).timestamp()
        if start <= done <= end:
            tasks.append(Task(name, done - float(seconds), done))
    return sorted(tasks, key=lambda task: task.end)


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
        rates: dict[str, list[float]] = {"ours": [], "bare": []}
        urls = {"ours": nginx_url(stack) + path, "bare": bare}
        for index in range(STATIC_ROUNDS):  # a ratio within each round, seconds apart
            for which in ("bare", "ours") if index % 2 == 0 else ("ours", "bare"):
                rates[which].append(wrk(site_name(stack), urls[which], seconds=3))
        ratios = [a / b for a, b in zip(rates["ours"], rates["bare"], strict=True)]
        ratio = statistics.median(ratios)
        report(f"static {path}: our nginx vs bare nginx (req/s, median of {STATIC_ROUNDS} rounds)",
               f"{statistics.median(rates['ours']):.0f} vs {statistics.median(rates['bare']):.0f}: "
               f"ratio {ratio:.2f} ({min(ratios):.2f}-{max(ratios):.2f}) (goal {STATIC_GOAL})")  # fmt: skip
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
        # the first upload of a new stack (workers' first tasks) is timed too
        first = transcoding(stack)
        runs = long_concurrency(stack)
        default = long_processes(stack)
        ratios = [run.ratio for run in (first, *runs[default])]
        transcoded = statistics.median(ratios) >= TRANSCODING_GOAL
        report(f"transcoding with the default {default} process(es): median of {len(ratios)}",
               f"ratio {statistics.median(ratios):.2f} (goal {TRANSCODING_GOAL})")  # fmt: skip
        token = first.token
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
