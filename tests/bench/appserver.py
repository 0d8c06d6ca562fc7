"""uWSGI against gunicorn on a real MediaCMS tree, side by side in one run (issue 21).

    python tests/bench/appserver.py        (MEDIACMS_ENV_FILE names the tree's settings)

The two app servers run the same image, settings, secrets, networks and limits:
- uWSGI is the stack's own web container (config/uwsgi/uwsgi.ini, UWSGI_PROCESSES x
  UWSGI_THREADS, 2 x 2 by default), spoken to over the uwsgi protocol;
- gunicorn is a one-off of the same service (`docker compose run --no-deps web`) with
  upstream 8.x's own setting (deploy/docker/supervisord/supervisord-gunicorn.conf:
  gthread, 2 workers x 2 threads, keep-alive 5 s), spoken to over HTTP with keep-alive.
Each sits behind its own nginx: the nginx image's binary with one minimal configuration
that differs only in the pass (uwsgi_pass / proxy_pass), so the figures compare the app
servers, not two nginx configurations. wrk runs on CPU 0; both nginx and both app
servers are pinned to CPU 1, one pair measured at a time, alternated round by round.

Measured: req/s and p50/p99 latency for the home page, the media list API, a media
page and a login POST at 1, 8 and 64 clients; memory (PSS) of each server's processes
after the load; the home page's req/s while 32 clients trickle request bodies (slow
clients); the media list's slowest answer while every uWSGI worker is replaced at once. The stack is throwaway and removed at the end; all traffic goes to its own
containers, in bounded runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.acceptance.client import make_clip, wait_ready
from tests.bench.load import PINNED, address
from tests.e2e.conftest import ADMIN_PASSWORD, new_deployment
from tests.uwsgi_workers import replace_every_worker

ROUNDS = 2
SECONDS = 6
CLIENTS = (1, 8, 64)
SLOW_CLIENTS = 32
GUNICORN = ["gunicorn", "cms.wsgi:application", "--workers=2", "--threads=2",
            "--worker-class=gthread", "--bind=0.0.0.0:8000", "--timeout=120",
            "--keep-alive=5", "--max-requests=1000", "--max-requests-jitter=50",
            "--error-logfile=-", "--log-level=warning"]  # fmt: skip

#: the one place the two nginx configurations differ
PASS = {
    "uwsgi": "include /etc/nginx/uwsgi_params; uwsgi_pass uwsgi-app:9000;",
    "gunicorn": (
        "proxy_pass http://gunicorn_app; proxy_http_version 1.1;"
        ' proxy_set_header Connection ""; proxy_set_header Host $http_host;'
        " proxy_set_header X-Forwarded-For $remote_addr;"
        " proxy_set_header X-Forwarded-Proto $scheme;"
    ),
}
UPSTREAM = "upstream gunicorn_app {{ server {gunicorn}:8000; keepalive 16; }}"
NGINX_CONF = """worker_processes 1; pid /tmp/nginx.pid; error_log /dev/stderr warn;
events {{ worker_connections 4096; }}
http {{ include /etc/nginx/mime.types; access_log off; client_max_body_size 10m;
  client_body_temp_path /tmp/b; proxy_temp_path /tmp/p; fastcgi_temp_path /tmp/f;
  uwsgi_temp_path /tmp/u; scgi_temp_path /tmp/s;
  map $remote_addr $client_addr {{ default $remote_addr; }}
  map $scheme $forwarded_proto {{ default $scheme; }}
  {upstream}
  server {{ listen 8080; location / {{ {passing} }} }} }}
"""


def report(name: str, value: str) -> None:
    print(f"{name:<58} {value}", flush=True)


def docker(*argv: str) -> str:
    return subprocess.run(["docker", *argv], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


#: where the servers measured run: CPU 1, wrk on CPU 0 (tests/bench/load.py)
CPU = ["--cpuset-cpus", "1"] if PINNED else []


def pin(container: str) -> None:
    if CPU:
        docker("update", *CPU, container)


def front(stack, server: str, gunicorn: str, folder: Path) -> tuple[str, str]:
    """An nginx for ``server`` on the stack's nginx networks: (container, its URL)."""
    conf = folder / f"{server}.conf"
    upstream = UPSTREAM.format(gunicorn=gunicorn) if server == "gunicorn" else ""
    conf.write_text(NGINX_CONF.format(upstream=upstream, passing=PASS[server]))
    conf.chmod(0o644)
    ours = stack.dc("ps", "--quiet", "nginx").stdout.split()[0]
    networks = list(json.loads(docker("inspect", "--format",
                                      "{{json .NetworkSettings.Networks}}", ours)))  # fmt: skip
    image = docker("inspect", "--format", "{{.Config.Image}}", ours)
    name = f"bench-{server}-nginx-{os.getpid()}"
    # on every network before nginx starts: it resolves its upstream's name at start
    docker("create", "--name", name, "--network", networks[0], *CPU,
           "-v", f"{conf}:/srv/nginx.conf:ro", "--entrypoint", "nginx", image,
           "-c", "/srv/nginx.conf", "-g", "daemon off;")  # fmt: skip
    for network in networks[1:]:
        docker("network", "connect", network, name)
    docker("start", name)
    time.sleep(1)
    if docker("inspect", "--format", "{{.State.Running}}", name) != "true":
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        raise RuntimeError(f"{name} did not start: {logs.stderr[-1500:]}")
    return name, f"http://{address(name)}:8080"


def answering(url: str, host: str) -> None:
    for _ in range(120):
        try:
            if requests.get(url + "/", headers={"Host": host}, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} never answered 200")


SECONDS_PER = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


#: wrk's answers that were not 2xx/3xx, by status, printed after the run
TALLY = """local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) codes = {} end
function response(status, headers, body)
  if status >= 400 then codes[status] = (codes[status] or 0) + 1 end
end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("codes")) do print("STATUS", status, count) end
  end
end
"""


def wrk(url: str, clients: int, host: str, script: Path) -> dict[str, float]:
    """req/s, p50 and p99 (ms), and the answers that failed (a status of 400 or more, or a
    socket error); more than 5 % failed is a broken setup, an error naming the statuses."""
    pinning = ["taskset", "-c", "0"] if PINNED else []
    out = subprocess.run([*pinning, "wrk", "-t1", f"-c{clients}", f"-d{SECONDS}s", "--latency",
                          "--timeout", "30s", "-H", f"Host: {host}", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    failed = sum(int(n) for n in re.findall(r"^STATUS\s+\d+\s+(\d+)$", out, re.M))
    failed += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    total = int(re.search(r"(\d+) requests in", out)[1])
    if failed > total / 20:  # a broken setup (a refused Host, a dead server), not load
        raise AssertionError(f"{url}: {failed} of {total} answers failed\n{out}")

    def ms(pattern: str) -> float:
        value, unit = re.search(pattern + r"([\d.]+)(us|ms|s|m)", out, re.M).groups()
        return float(value) * SECONDS_PER[unit] * 1000

    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
            "p50": ms(r"^\s+50%\s+"), "p99": ms(r"^\s+99%\s+"),
            "max": ms(r"^\s+Latency\s+\S+\s+\S+\s+"), "failed": failed}  # fmt: skip


def with_workers_replaced(stack, url: str, host: str, get: Path) -> dict[str, float]:
    """wrk with 8 clients while, 1 s in, every uWSGI worker is replaced at once (what
    max-requests did under even load; tests/uwsgi_workers.py)."""
    timer = threading.Timer(1.0, replace_every_worker, args=(stack,))
    timer.start()
    try:
        return wrk(url, 8, host, get)
    finally:
        timer.join()


def login_script(stack, folder: Path) -> Path:
    """A wrk script that logs the admin in (a real POST, its CSRF token and cookie)."""
    page = requests.get(stack.url("/accounts/login/"), timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
    cookie = page.cookies["csrftoken"]
    body = f"csrfmiddlewaretoken={token}&login=admin&password={ADMIN_PASSWORD}"
    checked = requests.post(stack.url("/accounts/login/"), data=body, allow_redirects=False,
                            headers={"Content-Type": "application/x-www-form-urlencoded",
                                     "Cookie": f"csrftoken={cookie}"}, timeout=30)  # fmt: skip
    assert checked.status_code == 302, f"the login POST did not log in: {checked.status_code}"
    script = folder / "login.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{body}"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        f'wrk.headers["Cookie"] = "csrftoken={cookie}"\n' + TALLY
    )
    return script


def memory(container: str) -> tuple[int, float]:
    """(processes, their summed PSS in MiB): the container's processes read from the host."""
    pids = [line.split()[0] for line in docker("top", container, "-o", "pid").splitlines()[1:]]
    pss = 0
    for pid in pids:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        pss += int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M)[1])
    return len(pids), pss / 1024


def trickle(url: str, host: str, stop: threading.Event) -> None:
    """One slow client: a login POST whose 1000-byte body comes a byte every half second."""
    where = url.removeprefix("http://")
    name, port = where.split(":")
    with socket.create_connection((name, int(port)), timeout=10) as conn:
        conn.sendall(f"POST /accounts/login/ HTTP/1.1\r\nHost: {host}\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n"
                     "Content-Length: 1000\r\n\r\n".encode())  # fmt: skip
        for _ in range(60):  # bounded: 30 s at most
            if stop.wait(0.5):
                return
            conn.sendall(b"x")


def with_slow_clients(url: str, host: str, get: Path) -> dict[str, float]:
    stop = threading.Event()
    clients = [threading.Thread(target=trickle, args=(url, host, stop), daemon=True)
               for _ in range(SLOW_CLIENTS)]  # fmt: skip
    for client in clients:
        client.start()
    time.sleep(1)
    try:
        return wrk(url + "/", 8, host, get)
    finally:
        stop.set()
        for client in clients:
            client.join(5)


def main() -> None:
    if not shutil.which("wrk"):
        sys.exit("wrk is missing (apt-get install wrk)")
    home = Path(tempfile.mkdtemp(prefix="bench-appserver-"))
    folder = Path(tempfile.mkdtemp(prefix="bench-appserver-conf-"))
    folder.chmod(0o755)
    stack = new_deployment(home, f"mediacms-bench-app-{os.getpid()}")
    # django-allauth allows 30 logins a minute per address (and 8.3.2 answers the 31st
    # with a 500, having no 429 template): the login POST is measured without that limit
    (home / "custom" / "local_settings.py").write_text("ACCOUNT_RATE_LIMITS = False\n")
    gunicorn = f"bench-gunicorn-{os.getpid()}"
    fronts: list[str] = []
    try:
        up = stack.invoke("up", check=False)
        if up.returncode != 0:
            sys.exit(f"invoke up failed:\n{up.stdout[-2000:]}\n{up.stderr[-2000:]}")
        host = stack.url("/").split("/")[2].split(":")[0]
        made = requests.post(stack.url("/api/v1/media"), auth=("admin", ADMIN_PASSWORD),
                             data={"title": "bench"}, timeout=300,
                             files={"media_file": ("b.mp4", make_clip(stack))})  # fmt: skip
        made.raise_for_status()
        token = made.json()["friendly_token"]
        # its encodings do not compete with the measure
        wait_ready(stack, token, poll=1)
        stack.dc("run", "-d", "--no-deps", "--name", gunicorn, "web", *GUNICORN)
        web = stack.dc("ps", "--quiet", "web").stdout.split()[0]
        servers = {"uwsgi": web, "gunicorn": gunicorn}
        for container in servers.values():
            pin(container)
        urls = {}
        for server in servers:
            name, urls[server] = front(stack, server, gunicorn, folder)
            fronts.append(name)
            answering(urls[server], host)
        get = folder / "get.lua"
        get.write_text(TALLY)
        pages = {"home page": ("/", get), "media list API": ("/api/v1/media", get),
                 "media page": (f"/view?m={token}", get),
                 "login POST": ("/accounts/login/", login_script(stack, folder))}  # fmt: skip
        taken: dict[tuple[str, int, str], list[dict[str, float]]] = {}
        for _ in range(ROUNDS):
            for page, (path, lua) in pages.items():
                for clients in CLIENTS:
                    for server, url in urls.items():  # alternated: drift hits both alike
                        got = wrk(url + path, clients, host, lua)
                        taken.setdefault((page, clients, server), []).append(got)
                        print(f"  [{page}, {clients} clients, {server}] {got}", flush=True)
        for page in pages:
            for clients in CLIENTS:
                row = {}
                for server in servers:
                    runs = taken[(page, clients, server)]
                    row[server] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                    row[server]["failed"] = sum(r["failed"] for r in runs)
                u, g = row["uwsgi"], row["gunicorn"]
                report(
                    f"{page}, {clients} clients: req/s uWSGI vs gunicorn",
                    f"{u['rps']:7.1f} vs {g['rps']:7.1f}: ratio "
                    + (f"{g['rps'] / u['rps']:.2f}" if u["rps"] else "- (uWSGI answered nothing)"),
                )
                report("  p50 / p99 ms, failed answers (all rounds)",
                       f"uWSGI {u['p50']:.0f} / {u['p99']:.0f}, {u['failed']:.0f}; "
                       f"gunicorn {g['p50']:.0f} / {g['p99']:.0f}, {g['failed']:.0f}")  # fmt: skip
        for url in urls.values():  # what the last cell left queued (64 logins) ends first
            answering(url, host)
        got = with_workers_replaced(stack, urls["uwsgi"] + "/api/v1/media", host, get)
        report("media list API, 8 clients, every uWSGI worker replaced 1 s in",
               f"{got['rps']:.1f} req/s, p99 {got['p99']:.0f} ms, slowest {got['max']:.0f} ms, "
               f"{got['failed']:.0f} failed")  # fmt: skip
        for server, container in servers.items():
            logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
            replaced = len(re.findall(r"(?:Respawned|spawned) uWSGI worker|Booting worker",
                                      logs.stdout + logs.stderr))  # fmt: skip
            report(f"workers {server} started (its first ones included)", str(replaced))
            count, pss = memory(container)
            report(f"memory of {server} after the load", f"{count} processes, PSS {pss:.0f} MiB")
        for server, url in urls.items():
            alone = wrk(url + "/", 8, host, get)["rps"]
            slow = with_slow_clients(url, host, get)["rps"]
            report(
                f"home page, 8 clients, beside {SLOW_CLIENTS} slow clients ({server})",
                f"{slow:.1f} vs {alone:.1f} req/s alone"
                + (f": ratio {slow / alone:.2f}" if alone else " (nothing answered alone)"),
            )
    finally:
        for name in [*fronts, gunicorn]:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        stack.dc("down", "--volumes", "--remove-orphans", check=False)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({"tree": stack.settings.version}))


if __name__ == "__main__":
    main()
