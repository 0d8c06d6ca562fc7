"""Least privilege and limits of the production compose file, attacked on a running stack.

Networks (nginx reaches web:9000 and nothing else), Redis's password, per-container
limits (memory, processes, log rotation, capabilities, bounded /tmp), transcoding on
the scratch volume rather than in RAM, and no setuid/setgid file in any image.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time

import pytest
import requests
from dotenv import dotenv_values
from invoke import Context

from mediacms_stack.engines import engine
from mediacms_stack.images import bootstrap
from mediacms_stack.stack import config
from tests.uploads import post_patiently

pytestmark = pytest.mark.e2e

SCRATCH = "/home/mediacms.io/scratch"
#: Capabilities the PostgreSQL entrypoint may keep (it owns its data folder, then drops
#: to the postgres user); Redis keeps none.
DB_CAPS = {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID"}


def containers(stack) -> dict[str, dict]:
    """`docker inspect` of every running container of the stack, by service name."""
    rows = stack.compose.ps(Context(), all_=False)
    ids = [row["ID"] for row in rows]
    done = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=True)
    return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in json.loads(done.stdout)}


def sh(stack, service: str, script: str, check: bool = False) -> subprocess.CompletedProcess:
    return stack.dc("exec", "-T", service, "sh", "-c", script, check=check)


def python(stack, service: str, code: str) -> subprocess.CompletedProcess:
    return stack.dc("exec", "-T", service, "python", "-c", code, check=False)


# --- networks ---------------------------------------------------------------------------
def connect(stack, source: str, host: str, port: int) -> bool:
    """True when `source` opens a TCP connection to host:port within 3 s (busybox nc in
    nginx, Python in the MediaCMS images)."""
    if source == "nginx":
        # busybox nc: `-e true` ends the session as soon as the connection is open
        return sh(stack, source, f"timeout 5 nc -w 3 {host} {port} -e true").returncode == 0
    done = python(stack, source, f"import socket; socket.create_connection(({host!r}, {port}), 3)")
    return done.returncode == 0


def test_nginx_reaches_web_only(stack):
    inspected = containers(stack)
    assert connect(stack, "nginx", "web", 9000), "nginx cannot reach web:9000"
    for service, port in (("db", 5432), ("redis", 6379)):
        assert not connect(stack, "nginx", service, port), f"nginx reaches {service} by name"
        for network in inspected[service]["NetworkSettings"]["Networks"].values():
            address = network["IPAddress"]
            assert not connect(stack, "nginx", address, port), f"nginx reaches {address}:{port}"
    # and the data network's members see db and redis (the probe itself works)
    assert connect(stack, "web", "db", 5432) and connect(stack, "web", "redis", 6379)


def web_addresses(stack) -> list[str]:
    """Every address of every web container, on every network it joins."""
    return [
        network["IPAddress"]
        for name, container in containers_all(stack, "web")
        for network in container["NetworkSettings"]["Networks"].values()
    ]


def containers_all(stack, service: str) -> list[tuple[str, dict]]:
    rows = [row for row in stack.compose.ps(Context(), all_=False) if row["Service"] == service]
    done = subprocess.run(["docker", "inspect", *[row["ID"] for row in rows]],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return [(c["Name"], c) for c in json.loads(done.stdout)]


def test_only_nginx_opens_the_uwsgi_socket_also_with_two_web_containers(stack):
    """uWSGI listens on web's `app` address and loopback only: workers and beat share the
    `data` network with web but get no connection, by name or by any address."""
    stack.invoke("scale", "web=2")
    try:
        addresses = web_addresses(stack)
        assert len(addresses) == 6, addresses  # two containers, each on app, data and egress
        for source in ("celery_short", "celery_long", "celery_beat"):
            assert not connect(stack, source, "web", 9000), f"{source} opens web:9000"
            for address in addresses:
                assert not connect(stack, source, address, 9000), f"{source} opens {address}:9000"
        # nginx reaches each web container, and each web container is healthy
        for name, container in containers_all(stack, "web"):
            app = next(n for k, n in container["NetworkSettings"]["Networks"].items()
                       if k.endswith("_app"))  # fmt: skip
            assert connect(stack, "nginx", app["IPAddress"], 9000), f"nginx misses {name}"
            assert container["State"]["Health"]["Status"] == "healthy", name
    finally:
        stack.invoke("scale", "web=1")


def test_backend_is_internal_and_only_nginx_is_published(stack):
    inspected = containers(stack)
    names = {n for c in inspected.values() for n in c["NetworkSettings"]["Networks"]}
    done = subprocess.run(["docker", "network", "inspect", *names], capture_output=True,
                          text=True, check=True)  # fmt: skip
    internal = {n["Name"] for n in json.loads(done.stdout) if n["Internal"]}
    for service, container in inspected.items():
        published = [b for b in (container["NetworkSettings"]["Ports"] or {}).values() if b]
        assert bool(published) == (service == "nginx"), (service, published)
        networks = set(container["NetworkSettings"]["Networks"])
        if service in ("db", "redis", "celery_beat"):
            # no way out of the host for the data and the scheduler
            assert networks <= internal, (service, networks - internal)
    assert any(n.endswith("_data") for n in internal) and any(n.endswith("_app") for n in internal)


def test_every_service_of_both_files_is_limited_and_the_front_joins_frontend_only(stack):
    from test_compose_files import resolved  # same folder: pytest puts it on sys.path

    merged = resolved(stack, "docker-compose.yaml", "docker-compose-cert.yaml")
    for name, service in merged["services"].items():
        assert service["logging"]["options"].keys() >= {"max-size", "max-file"}, name
        assert service.get("mem_limit") and service.get("pids_limit"), name
        assert "no-new-privileges:true" in service["security_opt"], name
    for name in ("listeners", "acme"):
        front = merged["services"][name]
        assert set(front["networks"]) == {"frontend"}, name
        assert front["read_only"] is True and front["cap_drop"] == ["ALL"], name
    mounts = [
        v.get("source", "") for s in merged["services"].values() for v in s.get("volumes", [])
    ]
    assert not [m for m in mounts if "docker.sock" in m], mounts  # no service drives the engine
    assert set(merged["services"]["nginx"]["networks"]) == {"frontend", "app"}
    assert {n for n, net in merged["networks"].items() if net.get("internal")} == {"app", "data"}


# --- redis ------------------------------------------------------------------------------
def test_redis_refuses_clients_without_the_password(stack):
    refused = python(
        stack, "web", "import redis; redis.Redis(host='redis', socket_timeout=5).ping()"
    )
    assert refused.returncode != 0 and "Authentication required" in refused.stderr, refused
    wrong = python(stack, "web", "import redis; redis.Redis(host='redis', password='guess', "
                                 "socket_timeout=5).ping()")  # fmt: skip
    assert wrong.returncode != 0 and "invalid username-password" in wrong.stderr, wrong
    granted = python(stack, "web", "import os, redis; "
                     "url = open(os.environ['REDIS_LOCATION_FILE']).read().strip(); "
                     "print(redis.Redis.from_url(url).ping())")  # fmt: skip
    assert granted.stdout.strip() == "True", granted


def test_redis_password_is_in_no_command_line(stack):
    password = stack.settings.require("REDIS_PASSWORD")
    redis = containers(stack)["redis"]
    shown = json.dumps([redis["Path"], redis["Args"], redis["Config"]["Cmd"],
                        redis["Config"]["Healthcheck"]])  # fmt: skip
    assert password not in shown
    cmdline = sh(stack, "redis", "tr '\\0' ' ' < /proc/1/cmdline", check=True).stdout
    assert "redis-server" in cmdline and password not in cmdline
    assert redis["State"]["Health"]["Status"] == "healthy"


def test_compose_names_a_missing_redis_password(stack, tmp_path):
    env = tmp_path / ".env"
    env.write_text("\n".join(line for line in (stack.home / ".env").read_text().splitlines()
                             if not line.startswith("REDIS_PASSWORD=")))  # fmt: skip
    done = subprocess.run(
        ["docker", "compose", "--env-file", str(env), "--file",
         str(config.ROOT / "docker-compose.yaml"), "config", "--quiet"],
        capture_output=True, text=True, check=False, env=stack.env(),
    )  # fmt: skip
    assert done.returncode != 0 and "REDIS_PASSWORD is not set in .env" in done.stderr


def test_secrets_are_files_not_environment(stack):
    """`docker inspect` of every container of the stack shows no secret of .env: they read
    them from files under /run/secrets (.secrets/ on the host, its owner's only), and they
    worked: the app answers, the admin logs in with ADMIN_PASSWORD, MediaCMS's plain role
    connects with its own, and Redis wants its password (test_redis_refuses_...)."""
    values = stack.settings.values
    keys = ("SECRET_KEY", "POSTGRES_PASSWORD", "POSTGRES_SUPERUSER_PASSWORD", "REDIS_PASSWORD",
            "ADMIN_PASSWORD")  # fmt: skip
    services = ("migrations", "web", "celery_beat", "celery_short", "celery_long", "nginx", "db",
                "redis", "redis_cache")  # fmt: skip
    for service in services:
        [found] = stack.dc("ps", "--all", "--quiet", service).stdout.split()
        shown = subprocess.run(["docker", "inspect", found], capture_output=True, text=True,
                               check=True).stdout  # fmt: skip
        for key in keys:
            assert values[key] and values[key] not in shown, f"{key} in docker inspect {service}"
    folder = stack.home / ".secrets"
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    # the last: the metrics overlay's, derived from SECRET_KEY, written for when it is on
    assert {p.name for p in folder.iterdir()} == {
        "admin_password", "postgres_password", "postgres_superuser_password", "secret_key",
        "redis_location", "redis_password", "metrics_db_password"}  # fmt: skip
    # the app read them (the workers' health checks reached the broker through the
    # REDIS_LOCATION file): its sessions work and it signs with .env's SECRET_KEY
    session = requests.Session()
    login = session.post(stack.url("/api/v1/login"), auth=("admin", values["ADMIN_PASSWORD"]),
                         timeout=30)  # fmt: skip
    assert login.status_code == 200 and session.get(stack.url("/api/v1/whoami"),
                                                    timeout=30).status_code == 200  # fmt: skip
    signed = stack.dc("exec", "-T", "web", "python", "manage.py", "shell", "-c",
                      "from django.conf import settings; import hashlib; "
                      "print(hashlib.sha256(settings.SECRET_KEY.encode()).hexdigest())")  # fmt: skip
    assert signed.stdout.split()[-1] == hashlib.sha256(values["SECRET_KEY"].encode()).hexdigest()
    assert (folder / "admin_password").read_text() == values["ADMIN_PASSWORD"]
    whoami = requests.get(stack.url("/api/v1/whoami"), auth=("admin", values["ADMIN_PASSWORD"]),
                          timeout=30)  # fmt: skip
    assert whoami.status_code == 200, whoami.status_code
    app = values["POSTGRES_USER"]
    login = stack.dc("exec", "-T", "-e", f"PGPASSWORD={values['POSTGRES_PASSWORD']}", "db",
                     "psql", "-h", "127.0.0.1", "-U", app, "-d", "mediacms", "-Atc",
                     "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                     check=False)  # fmt: skip
    assert login.returncode == 0 and login.stdout.strip() == "f", login.stdout + login.stderr


# --- limits -----------------------------------------------------------------------------
def test_every_container_is_limited(stack):
    inspected = containers(stack)
    assert {"nginx", "web", "celery_beat", "celery_short", "celery_long", "db", "redis"} <= set(
        inspected
    )
    for service, container in inspected.items():
        host = container["HostConfig"]
        assert host["Memory"] > 0, f"{service}: no memory limit"
        assert host["PidsLimit"] and host["PidsLimit"] > 0, f"{service}: no pids limit"
        log = host["LogConfig"]
        assert log["Type"] == "json-file" and {"max-size", "max-file"} <= set(log["Config"]), (
            service,
            log,
        )
        assert "no-new-privileges:true" in host["SecurityOpt"], service
        assert "ALL" in host["CapDrop"], service
        for path, options in (host.get("Tmpfs") or {}).items():
            assert "size=" in options, f"{service}: tmpfs {path} unbounded"
    db_caps = {c if c.startswith("CAP_") else f"CAP_{c}" for c in
               inspected["db"]["HostConfig"]["CapAdd"] or []}  # fmt: skip
    assert db_caps <= DB_CAPS, db_caps
    assert not inspected["redis"]["HostConfig"]["CapAdd"]


def test_mediacms_processes_open_at_most_16384_files(stack):
    """The open-file cap (ulimits: nofile) as the kernel applies it to each MediaCMS
    container's main process, not as the compose file says it (engines often hand
    containers about a billion, which Celery's pool once spent minutes closing)."""
    for service in ("web", "celery_beat", "celery_short", "celery_long"):
        limits = sh(stack, service, "grep '^Max open files' /proc/1/limits", check=True).stdout
        assert limits.split()[3:5] == ["16384", "16384"], (service, limits)


def test_redis_runs_without_any_capability(stack):
    status = sh(stack, "redis", "grep -E '^(Uid|CapEff|CapBnd)' /proc/1/status", check=True)
    fields = dict(line.split(":\t") for line in status.stdout.strip().splitlines())
    assert fields["Uid"].split()[0] != "0"
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0, fields


def test_pids_limit_is_enforced(stack):
    """One container cannot start more processes than its limit (then all are ended)."""
    limit = containers(stack)["celery_beat"]["HostConfig"]["PidsLimit"]
    code = (
        "import subprocess\n"
        "procs, error = [], None\n"
        f"for _ in range({limit + 10}):\n"
        "    try:\n"
        "        procs.append(subprocess.Popen(['sleep', '60']))\n"
        "    except OSError as exc:\n"
        "        error = exc\n"
        "        break\n"
        "for p in procs:\n"
        "    p.kill()\n"
        "    p.wait()\n"
        "print(len(procs), error)\n"
    )
    done = python(stack, "celery_beat", code)
    started, _, error = done.stdout.strip().partition(" ")
    assert int(started) < limit and "Resource temporarily unavailable" in error, done
    left = sh(stack, "celery_beat", "ls /proc | grep -c '^[0-9]'", check=True).stdout
    assert int(left) < 10  # the sleeps are gone


# --- scratch on disk ----------------------------------------------------------------------
TINY_TMPFS = "1m"


def recreate_with_tmpfs(stack, size: str) -> None:
    """web, the workers and nginx (which looks web up again) with /tmp of `size`."""
    config.update(stack.settings, {"TMPFS_SIZE": size})
    wait = ("--detach", "--wait", "--wait-timeout", "300", "--no-deps")
    stack.dc("up", *wait, "web", "celery_short", "celery_long")
    stack.dc("up", *wait, "--force-recreate", "nginx")


@pytest.fixture(scope="module")
def tiny_tmp(stack):
    """The containers that take uploads and transcode, with a 1 MiB /tmp; put back after."""
    before = dotenv_values(stack.settings.env_file).get("TMPFS_SIZE") or "64m"
    try:
        recreate_with_tmpfs(stack, TINY_TMPFS)
        yield
    finally:
        recreate_with_tmpfs(stack, before)


def test_uploads_and_transcoding_larger_than_tmp_use_the_scratch_volume(stack, admin, tiny_tmp):
    for service in ("web", "celery_long", "nginx"):
        size = sh(stack, service, "df -k /tmp | tail -n 1", check=True).stdout.split()[1]
        assert int(size) == 1024, f"{service}: /tmp is {size} KiB"
    assert sh(stack, "celery_long", "echo $TMPDIR", check=True).stdout.strip() == SCRATCH
    # Noise does not compress: the clip and its 144p encoding are both several MiB.
    clip = (
        f"f={SCRATCH}/noise-$$.mp4 && ffmpeg -loglevel error -f lavfi "
        "-i testsrc2=duration=12:size=320x240:rate=25 -f lavfi -i sine=duration=12 "
        "-vf noise=alls=100:allf=t -c:v libx264 -preset ultrafast -crf 18 -c:a aac -shortest "
        '-movflags +faststart "$f" && cat "$f" && rm -f "$f"'
    )
    video = stack.dc("exec", "-T", "web", "sh", "-c", clip, text=False).stdout
    assert video[4:8] == b"ftyp" and len(video) > 3 * 1024 * 1024, len(video)
    response = post_patiently(
        stack.url("/api/v1/media"),
        auth=admin,
        data={"title": "bigger than /tmp"},
        files={"media_file": ("noise.mp4", video, "video/mp4")},
        timeout=120,
    )
    assert response.status_code == 201, response.text[-2000:]
    media = response.json()
    deadline = time.monotonic() + 300
    while True:
        state = requests.get(stack.url(f"/api/v1/media/{media['id']}"), timeout=10).json()
        if state["encoding_status"] in ("success", "fail"):
            break
        assert time.monotonic() < deadline, f"encoding did not finish: {state}"
        time.sleep(3)
    assert state["encoding_status"] == "success", stack.dc("logs", "--tail", "30",
                                                            "celery_long").stdout  # fmt: skip
    encoded = requests.get(stack.url(state["encoded_url"]), timeout=60)
    assert encoded.status_code == 200 and encoded.content[4:8] == b"ftyp"
    # ffmpeg wrote this whole file into TEMP_DIRECTORY first: it could not fit in /tmp
    assert len(encoded.content) > 1024 * 1024, len(encoded.content)


# --- images -------------------------------------------------------------------------------
def setuid_files(image: str) -> list[str]:
    """Files with the setuid or setgid bit anywhere in the image's root filesystem."""
    find = "find / -xdev -perm /6000 -type f"
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "sh",
         image, "-c", f"if command -v find >/dev/null; then {find}; else busybox {find}; fi"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_no_setuid_or_setgid_file_in_the_images_the_stack_runs(stack):
    # the image id each container was created from: a tag may have moved since
    images = {c["Config"]["Image"]: c["Image"] for c in containers(stack).values()}
    assert len(images) >= 5, images  # web, worker, nginx, postgres, redis
    found = {
        name: files for name, image in sorted(images.items()) if (files := setuid_files(image))
    }
    assert not found, found


def test_no_setuid_or_setgid_file_in_the_node_stand_in(tmp_path):
    """The dev compose's Node stand-in, as this checkout builds it (from the build cache
    when nothing changed)."""
    base = bootstrap.LOCAL_IMAGES["BASE_IMAGE"]
    builder = engine.builder(Context())
    iidfile = tmp_path / "iid"
    argv = builder.command("--iidfile", str(iidfile), "--build-arg", f"BASE_IMAGE={base}",
                           str(config.ROOT / "bootstrap" / "node"))  # fmt: skip
    built = subprocess.run(argv, env={**os.environ, **dict(builder.env)}, capture_output=True,
                           text=True, check=False, timeout=900)  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    assert setuid_files(iidfile.read_text().strip()) == []
