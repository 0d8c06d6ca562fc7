"""MediaCMS on a Docker Swarm of three nodes made on this machine (cluster.py).

Modes used here, because this machine has no IPVS and no ingress routing mesh:
services resolve with `endpoint_mode: dnsrr` and nginx publishes its port in host mode
on every node (SWARM_ENDPOINT_MODE, SWARM_PUBLISH_MODE in .env). Traffic goes only to
the nodes this test made. The tests run in order and share one deployment.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from datetime import datetime

import pytest
import requests
from invoke import Context

from mediacms_stack.engines.swarm import behind
from mediacms_stack.engines.swarm.poll import TERMINAL, until
from mediacms_stack.stack import lock, model
from mediacms_stack.stack.secrets import SECRETS
from tests.swarm.cluster import SHARED
from tests.swarm.conftest import (
    ADMIN_PASSWORD,
    CUSTOM_CSS,
    PORT,
    PORTAL_NAME,
    STACK,
    Deployment,
    local_images,
)
from tests.uploads import basic, post_patiently

ADMIN_USER = "admin"

pytestmark = pytest.mark.e2e

SERVICES = (*model.SERVICES, "migrations")  # the one-shot job is a service on Swarm too


def stack_services(deployment: Deployment) -> set[str]:
    out = deployment.docker("service", "ls", "--format", "{{.Name}}").stdout
    return {name for name in out.split() if name.startswith(f"{STACK}_")}


def test_refusals_change_nothing(deployment):
    """No data label yet, no shared storage, beat above one: one error each, no stack."""
    done = deployment.invoke("swarm.deploy", check=False)
    assert done.returncode == 1
    assert "no node carries it" in done.stderr and "nothing was deployed" in done.stderr
    assert done.stderr.count("error:") == 1
    env = deployment.home / ".env"
    saved = env.read_text()
    env.write_text(saved.replace("MEDIA_VOLUME_TYPE=none", "MEDIA_VOLUME_TYPE="))
    try:
        done = deployment.invoke("swarm.deploy", check=False)
    finally:
        env.write_text(saved)
    assert done.returncode == 1 and "MEDIA_VOLUME_TYPE not set" in done.stderr
    done = deployment.invoke("swarm.scale", "celery_beat=2", check=False)
    assert done.returncode == 1 and "exactly once" in done.stderr
    assert stack_services(deployment) == set()


def stack_secrets(deployment: Deployment) -> set[str]:
    out = deployment.docker("secret", "ls", "--filter",
                            f"label=com.docker.stack.namespace={STACK}", "--format", "{{.Name}}")  # fmt: skip
    return set(out.stdout.split())


def test_deploy_from_nothing_to_healthy(deployment, cluster):
    deployment.invoke("swarm.init", "--advertise-addr", cluster.ip(cluster.manager),
                      "--data-node", "node1")  # fmt: skip
    # a secret a former deploy left (same stack label), and one of someone else
    for name, labels in ((f"{STACK}_secret_key_0ld0ld0ld0ld", ["--label",
                          f"com.docker.stack.namespace={STACK}"]), ("not-ours", [])):  # fmt: skip
        subprocess.run(["docker", "--host", cluster.host, "secret", "create", *labels, name, "-"],
                       input="x", text=True, check=True, capture_output=True)  # fmt: skip
    started = time.monotonic()
    done = deployment.invoke("swarm.deploy", "--timeout", "900")
    took = time.monotonic() - started
    print(f"\n[measured] swarm.deploy to all healthy: {took:.0f}s\n{done.stdout}")
    assert stack_services(deployment) == {f"{STACK}_{name}" for name in SERVICES}
    status = deployment.invoke("swarm.status").stdout
    print(status)
    nodes = {node for node, _ in deployment.tasks("web")}
    assert len(deployment.tasks("web")) == 2 and len(nodes) == 2, deployment.tasks("web")
    assert {node for node, _ in deployment.tasks("db")} == {"node1"}
    for node in cluster.nodes:  # nginx on every node answers, through web
        response = deployment.get(node, "/")
        assert response.status_code == 200, (node, response.status_code, response.text[:200])
        # custom/local_settings.py and custom/static reach every node as Swarm configs
        assert PORTAL_NAME in response.text, node
        css = deployment.get(node, "/custom/static/css/custom.css")
        assert css.status_code == 200 and css.text == CUSTOM_CSS, (node, css.status_code)
    used = stack_secrets(deployment)
    assert f"{STACK}_secret_key_0ld0ld0ld0ld" not in used and len(used) == len(SECRETS), used
    assert "not-ours" in deployment.docker("secret", "ls", "--format", "{{.Name}}").stdout
    deployment.docker("secret", "rm", "not-ours")
    assert "ORCHESTRATOR=swarm" in (deployment.home / ".env").read_text()


def test_secrets_are_files_not_environment(deployment):
    out = deployment.docker("service", "inspect", *(f"{STACK}_{name}" for name in SERVICES),
                            "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}").stdout  # fmt: skip
    settings = deployment.settings
    for key in ("SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "ADMIN_PASSWORD",
                "POSTGRES_SUPERUSER_PASSWORD"):  # fmt: skip
        assert settings.require(key) not in out, key
    assert "SECRET_KEY_FILE=/run/secrets/secret_key" in out


def test_tmpfs_size_reaches_every_service_that_takes_it(deployment):
    """TMPFS_SIZE=96m in .env (conftest) is the /tmp of the app services and nginx, as on
    compose; the Redis servers keep their own 1 MiB."""
    wanted = {name: 96 * 2**20 for name in ("migrations", "web", "celery_beat", "celery_short",
                                              "celery_long", "nginx")}  # fmt: skip
    wanted |= {"redis": 2**20, "redis_cache": 2**20}
    for name, size in wanted.items():
        mounts = json.loads(deployment.docker(
            "service", "inspect", f"{STACK}_{name}",
            "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Mounts}}").stdout)  # fmt: skip
        [tmp] = [m for m in mounts if m["Target"] == "/tmp"]
        assert tmp["TmpfsOptions"]["SizeBytes"] == size, (name, tmp)


def mediacms_role(deployment: Deployment) -> str:
    """``super|createrole|createdb|owner of the database`` of MediaCMS's role, as .env names
    it (``f|f|f|mediacms``: a plain role owning its database)."""
    settings = deployment.settings
    sql = ("SELECT rolsuper, rolcreaterole, rolcreatedb, (SELECT datdba::regrole::text FROM "
           "pg_database WHERE datname = current_database()) FROM pg_roles "
           "WHERE rolname = current_user")  # fmt: skip
    return deployment.docker("exec", db_container(deployment), "psql", "-U",
                             settings.require("POSTGRES_USER"), "-d",
                             settings.get("POSTGRES_DB", "mediacms"), "-At", "-c", sql).stdout.strip()  # fmt: skip


def test_mediacms_is_a_plain_database_role(deployment):
    settings = deployment.settings
    user, superuser = settings.require("POSTGRES_USER"), settings.require("POSTGRES_SUPERUSER")
    assert user != superuser
    assert mediacms_role(deployment) == f"f|f|f|{user}"


def task_addresses(deployment: Deployment, service: str) -> dict[str, list[str]]:
    """{network: addresses} of the service's running tasks."""
    ids = deployment.docker("service", "ps", "-q", "--filter", "desired-state=running",
                            f"{STACK}_{service}").stdout.split()  # fmt: skip
    out = deployment.docker("inspect", "--format", "{{json .NetworksAttachments}}", *ids).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        for attachment in json.loads(line) or []:
            network = attachment["Network"]["Spec"]["Name"].removeprefix(f"{STACK}_")
            found.setdefault(network, []).extend(a.split("/")[0] for a in attachment["Addresses"])
    return found


def task_container(deployment: Deployment, cluster, service: str) -> tuple[str, str]:
    """(DOCKER_HOST, container id) of a running task of ``service``."""
    node = sorted(node for node, _ in deployment.tasks(service))[0]
    host = cluster.host_of(f"mcms-swarm-{node}")
    found = subprocess.run(["docker", "--host", host, "ps", "-q", "--filter",
                            f"label=com.docker.swarm.service.name={STACK}_{service}"],
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return host, found[0]


#: MediaCMS's page, asked over the uwsgi protocol at address:9000 as web's health check
#: asks it (a 2xx or 3xx): an open connection, or a status line, proves nothing here (this
#: machine's network accepts connections to addresses nobody has, and answers them 400)
UWSGI_ANSWERS = (
    "import sys; sys.path.insert(0, '/usr/local/bin'); import healthcheck; "
    "sys.exit(1 if healthcheck.uwsgi(host=sys.argv[1]) else 0)"
)


def uwsgi_answers(where: tuple[str, str], address: str) -> bool:
    """True when uWSGI answers the container at address:9000."""
    host, container = where
    return subprocess.run(["docker", "--host", host, "exec", container, "python", "-c",
                           UWSGI_ANSWERS, address], capture_output=True, check=False,
                          timeout=60).returncode == 0  # fmt: skip


def test_uwsgi_listens_on_the_app_network_only(deployment, cluster):
    """web's uWSGI answers on its `app` address (nginx's network) and on no other: a
    worker, on `data` with web, gets no answer from any of web's addresses; web itself
    gets one from the app addresses and none from the data ones (nothing listens there)."""
    addresses = task_addresses(deployment, "web")
    assert addresses.get("app") and addresses.get("data"), addresses
    worker = task_container(deployment, cluster, "celery_short")
    for network, found in addresses.items():
        for address in found:
            assert not uwsgi_answers(worker, address), f"celery_short reaches {network} {address}"
    web = task_container(deployment, cluster, "web")
    assert all(uwsgi_answers(web, address) for address in addresses["app"]), addresses
    assert not any(uwsgi_answers(web, address) for address in addresses["data"]), addresses


def make_video(deployment: Deployment, seconds: int = 3) -> bytes:
    """A real H.264/AAC clip made by the web image's own ffmpeg (on this machine)."""
    script = (
        f"ffmpeg -loglevel error -f lavfi -i testsrc=duration={seconds}:size=320x240:rate=25 "
        f"-f lavfi -i sine=duration={seconds} -c:v libx264 -c:a aac -shortest "
        "-movflags +faststart /tmp/clip.mp4 && cat /tmp/clip.mp4"
    )
    image = local_images(deployment.settings.version)[0]
    done = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh",
                           image, "-c", script], capture_output=True, check=True)  # fmt: skip
    assert done.stdout[4:8] == b"ftyp"
    return done.stdout


def test_uploads_of_strangers_are_refused_before_their_body_on_every_node(deployment, cluster):
    """nginx on Swarm asks web who may upload before reading a byte, as on compose: a
    declared 5 GiB body, anonymous or with a wrong password, is answered at once."""
    heads = {"anonymous": "", "wrong password": f"Authorization: {basic(ADMIN_USER, 'no')}\r\n"}
    for node in cluster.nodes:
        for who, extra in heads.items():
            head = (f"POST /api/v1/media HTTP/1.1\r\nHost: localhost\r\n{extra}"
                    f"Content-Length: {5 * 2**30}\r\nContent-Type: video/mp4\r\n\r\n")  # fmt: skip
            started = time.monotonic()
            with socket.create_connection((cluster.ip(node), PORT), timeout=30) as conn:
                conn.sendall(head.encode() + b"\0" * 65536)
                status = conn.recv(4096).split(b"\r\n", 1)[0].decode()
            took = time.monotonic() - started
            assert status.split()[1:2] in (["401"], ["403"]) and took < 10, (node, who, status)


@pytest.fixture(scope="module")
def uploaded(deployment, cluster):
    """A clip uploaded through the nginx of a node that runs no celery_long task."""
    long_nodes = {node for node, _ in deployment.tasks("celery_long")}
    entry = next(n for n in cluster.nodes if n.removeprefix("mcms-swarm-") not in long_nodes)
    video = make_video(deployment)
    # the stack's first upload, a few seconds after the deploy: a 503 page is tried again
    response = post_patiently(deployment.url(entry, "/api/v1/media"), headers={"Host": "localhost"},
                              auth=(ADMIN_USER, ADMIN_PASSWORD), data={"title": "swarm clip"},
                              files={"media_file": ("swarm clip.mp4", video, "video/mp4")},
                              timeout=120)  # fmt: skip
    assert response.status_code == 201, response.text[:500]
    print(f"\n[swarm] uploaded through {entry}; celery_long runs on {sorted(long_nodes)}")
    return response.json(), video, entry


def wait_encoded(deployment, node, media_id, timeout=300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = deployment.get(node, f"/api/v1/media/{media_id}").json()
        if state["encoding_status"] in ("success", "fail") and state["thumbnail_url"]:
            return state
        assert time.monotonic() < deadline, f"encoding did not finish: {state}"
        time.sleep(3)


def test_upload_transcoded_on_another_node_and_served_by_every_node(deployment, cluster,
                                                                     uploaded):  # fmt: skip
    media, video, entry = uploaded
    state = wait_encoded(deployment, cluster.manager, media["id"])
    assert state["encoding_status"] == "success", state
    for node in cluster.nodes:  # every node's nginx, each through any web replica
        original = deployment.get(node, media["original_url"], timeout=30)
        assert original.status_code == 200 and original.content == video, node
        encoded = deployment.get(node, state["encoded_url"], timeout=30)
        assert encoded.status_code == 200 and encoded.content[4:8] == b"ftyp", node
        assert deployment.get(node, state["thumbnail_url"]).content[:3] == b"\xff\xd8\xff"
    logs = deployment.docker("service", "logs", f"{STACK}_celery_long")
    done = [line for line in (logs.stdout + logs.stderr).splitlines()
            if "files.tasks.encode_media" in line and "succeeded" in line]  # fmt: skip
    where = {match[1] for line in done if (match := re.search(r"@(node\d+)", line))}
    print(f"[swarm] uploaded through {entry}, transcoded on {sorted(where)}")
    assert where and entry.removeprefix("mcms-swarm-") not in where, done


def status_at(deployment: Deployment, host: str) -> tuple[int, dict]:
    done = deployment.invoke("status", "--json", check=False, host=host)
    report = json.loads(done.stdout)
    assert (done.returncode == 0) == (not report["problems"]), (done.returncode, report)
    return done.returncode, report


def test_status_reads_the_swarm_stack(deployment, cluster, uploaded):
    """`invoke status` on Swarm: the services from the manager; Redis's queues and the
    database's volume from the data node (the manager here); encodings and the media
    volume from a node running web. What runs elsewhere is one line naming DOCKER_HOST."""
    _, at_manager = status_at(deployment, cluster.host)
    rows = {row["service"]: row for row in at_manager["services"]}
    for name in model.SERVICES:
        assert (rows[name]["state"], rows[name]["health"]) == ("running", "healthy"), rows
    assert rows["migrations"]["state"] == "completed", rows
    assert rows["web"]["version"] == deployment.settings.version
    assert set(at_manager["queues"]) == set(model.QUEUES), at_manager
    assert at_manager["volumes"][model.DB_VOLUME]["bytes"] > 0, at_manager["volumes"]
    web_node = web_host(deployment, cluster)
    _, at_web = status_at(deployment, web_node)
    assert at_web["encodings"]["failed"] == 0 and at_web["encodings"]["stuck"] == 0, at_web
    assert at_web["volumes"][model.MEDIA_VOLUME]["bytes"] > 0, at_web["volumes"]
    if web_node != cluster.host:  # the services and the database's volume: the manager's
        assert "not a swarm manager" in at_web["unread"]["services"], at_web["unread"]
        assert "DOCKER_HOST=" in at_web["unread"]["db volumes"], at_web["unread"]
        assert any(p.startswith("db volumes: could not be read") for p in at_web["problems"])


# --- operations on the swarm: backup-db, manage, refusal, full backup round trip ---------
TABLES = ("files_media", "users_user", "django_migrations", "auth_group")


def db_container(deployment: Deployment) -> str:
    """The db task's container on the manager (the data node)."""
    found = deployment.docker("ps", "-q", "--filter",
                              f"label=com.docker.swarm.service.name={STACK}_db").stdout.split()  # fmt: skip
    assert len(found) == 1, found
    return found[0]


def row_counts(deployment: Deployment) -> dict[str, int]:
    settings = deployment.settings
    sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in TABLES)  # noqa: S608
    out = deployment.docker("exec", db_container(deployment), "psql", "-U",
                            settings.get("POSTGRES_USER", "mediacms"), "-d",
                            settings.get("POSTGRES_DB", "mediacms"), "-At", "-F", "\t", "-c",
                            sql).stdout  # fmt: skip
    return {table: int(count) for table, count in (line.split("\t") for line in out.splitlines())}


def media_checksums(cluster) -> dict[str, str]:
    """sha256 of every file on the shared media storage, as a node sees it."""
    script = (f"cd {SHARED}/media && find . -type f ! -path './.mediacms-restore-*' "
              "-exec sha256sum {} + | sort -k2")  # fmt: skip
    out = subprocess.run(["docker", "exec", cluster.manager, "sh", "-c", script],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return {name: digest for digest, name in (line.split("  ", 1) for line in out.splitlines())}


def logs_in(deployment, node, password) -> bool:
    response = requests.post(deployment.url(node, "/api/v1/login"), headers={"Host": "localhost"},
                             auth=(ADMIN_USER, password), timeout=15)  # fmt: skip
    return response.status_code == 200


def web_host(deployment: Deployment, cluster) -> str:
    """DOCKER_HOST of a node running a web task (manage and the shells exec there)."""
    node = sorted(node for node, _ in deployment.tasks("web"))[0]
    return cluster.host_of(f"mcms-swarm-{node}")


def test_manage_and_backup_db_against_the_swarm(deployment, cluster, tmp_path):
    host = web_host(deployment, cluster)
    done = deployment.invoke("manage", "showmigrations users", host=host)
    assert "[X]" in done.stdout and "[ ]" not in done.stdout, done.stdout
    done = deployment.invoke("admin-shell", "-c", "id -u; hostname", host=host)
    assert done.stdout.split()[0] == "33", done.stdout
    done = deployment.invoke("backup-db", "--dest", str(tmp_path))
    dumps = list(tmp_path.glob("mediacms-db-*.dump"))
    assert len(dumps) == 1 and dumps[0].read_bytes()[:5] == b"PGDMP", done.stdout
    manifest = json.loads(dumps[0].with_name(dumps[0].name + ".manifest.json").read_text())
    assert manifest["project"] == STACK and {"db", "nginx"} <= set(manifest["images"])
    counts = row_counts(deployment)
    assert {t: manifest["row_counts"][t] for t in TABLES} == counts


def test_db_task_on_another_node_is_one_refusal_writing_nothing(deployment, cluster, tmp_path):
    """DOCKER_HOST at a worker that runs no db task: one error naming where to point it."""
    worker = cluster.nodes[1]
    for task in (("backup-db", "--dest", str(tmp_path)), ("backup", "--dest", str(tmp_path))):
        done = deployment.invoke(*task, check=False, host=cluster.host_of(worker))
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stderr.count("error:") == 1, done.stderr
        assert "no running db task on node2" in done.stderr and "DOCKER_HOST=" in done.stderr
        assert "nothing was changed" in done.stderr
    assert list(tmp_path.iterdir()) == []


def wipe(deployment, cluster, timeout=300) -> None:
    """The stack's data gone: stack removed, db and redis volumes removed, media emptied."""
    deployment.docker("stack", "rm", STACK)
    namespace = f"label=com.docker.stack.namespace={STACK}"
    deadline = time.monotonic() + timeout
    while True:
        left = [cluster.on(node, "ps", "-aq", "--filter", namespace).stdout.split()
                for node in cluster.nodes]  # fmt: skip
        left += [deployment.docker("network", "ls", "-q", "--filter", namespace).stdout.split()]
        if not any(left):
            break
        assert time.monotonic() < deadline, f"stack not gone after {timeout}s: {left}"
        time.sleep(2)
    deployment.docker("volume", "rm", f"{STACK}_postgres_data", f"{STACK}_redis_data")
    subprocess.run(["docker", "exec", cluster.manager, "find", f"{SHARED}/media", "-mindepth", "1",
                    "-delete"], check=True, capture_output=True)  # fmt: skip


def test_backup_wipe_deploy_restore_round_trip(deployment, cluster, uploaded, tmp_path):
    media, video, _ = uploaded
    wait_encoded(deployment, cluster.manager, media["id"])
    backed_up_password = "swarm-Backed-up-pw-2"
    deployment.invoke("set-admin-password", "--password-stdin", input=backed_up_password + "\n",
                      host=web_host(deployment, cluster))  # fmt: skip
    counts, checksums = row_counts(deployment), media_checksums(cluster)
    assert counts["files_media"] >= 1 and len(checksums) >= 3, (counts, checksums)
    started = time.monotonic()
    deployment.invoke("backup", "--dest", str(tmp_path), "--keep", "1")
    print(f"\n[measured] invoke backup on the swarm: {time.monotonic() - started:.0f}s")
    (folder,) = tmp_path.glob("mediacms-2*")
    assert json.loads((folder / "manifest.json").read_text())["project"] == STACK

    wipe(deployment, cluster)
    # made again as a stack of before the role split: .env names no superuser, so the one
    # role, MediaCMS's, initialises the cluster (swarm.update splits it, below)
    env = deployment.home / ".env"
    env.write_text("".join(line for line in env.read_text().splitlines(keepends=True)
                           if not line.startswith("POSTGRES_SUPERUSER")))  # fmt: skip
    deployment.invoke("swarm.deploy", "--timeout", "900")
    assert mediacms_role(deployment) == "t|t|t|mediacms"
    assert row_counts(deployment)["files_media"] == 0 and media_checksums(cluster) == {}
    assert not logs_in(deployment, cluster.manager, backed_up_password)

    started = time.monotonic()
    done = deployment.invoke("restore", str(folder), "--yes")
    print(f"[measured] invoke restore on the swarm (writers scaled to 0 and back): "
          f"{time.monotonic() - started:.0f}s\n{done.stdout[-600:]}")  # fmt: skip
    assert row_counts(deployment) == counts
    assert media_checksums(cluster) == checksums
    for node in cluster.nodes:
        assert logs_in(deployment, node, backed_up_password), node
        assert deployment.get(node, media["original_url"], timeout=30).content == video
    assert not logs_in(deployment, cluster.manager, ADMIN_PASSWORD)
    for name in ("web", "celery_short", "celery_long", "celery_beat"):  # back to their counts
        assert len(deployment.tasks(name)) == (2 if name == "web" else 1), name
    deployment.invoke("set-admin-password", "--password-stdin", input=ADMIN_PASSWORD + "\n",
                      host=web_host(deployment, cluster))  # fmt: skip


def requests_per_second(deployment, nodes, seconds=15.0, threads=8) -> float:
    """GET / through the nginx of every given node from `threads` clients, bounded in time."""
    done, failed = [0], [0]
    stop = time.monotonic() + seconds

    def client(index):
        session = requests.Session()
        node = nodes[index % len(nodes)]
        while time.monotonic() < stop:
            try:
                ok = session.get(deployment.url(node, "/"), headers={"Host": "localhost"},
                                 timeout=10).status_code == 200  # fmt: skip
            except requests.RequestException:
                ok = False
            done[0] += ok
            failed[0] += not ok

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 15)
    assert failed[0] == 0, f"{failed[0]} failed requests"
    return done[0] / seconds


def test_a_swarm_task_waits_for_the_operation_that_holds_the_stack(deployment):
    """swarm.* tasks that change the stack take its lock, as compose's do: one started
    while another operation (a restore, here) holds it waits, saying for whom."""
    held, release = threading.Event(), threading.Event()

    def restore() -> None:
        with lock.exclusive(deployment.settings, "restore"):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=restore)
    holder.start()
    try:
        assert held.wait(10)
        threading.Timer(4, release.set).start()
        started = time.monotonic()
        done = deployment.invoke("swarm.scale", "web=2")
        took = time.monotonic() - started
    finally:
        release.set()
        holder.join()
    assert "waiting up to 120s for the stack's lock, held by `invoke restore`" in done.stderr
    assert took >= 3.5, (took, done.stderr)


def test_scale_web_and_celery_long_up_and_down(deployment, cluster):
    deployment.invoke("swarm.scale", "web=1")
    one = requests_per_second(deployment, cluster.nodes)
    started = time.monotonic()
    deployment.invoke("swarm.scale", "web=3,celery_long=2")
    print(
        f"\n[measured] scale web 1 -> 3 and celery_long 1 -> 2: {time.monotonic() - started:.0f}s"
    )
    assert len(deployment.tasks("web")) == 3 and len(deployment.tasks("celery_long")) == 2
    assert all("Running" in state for _, state in deployment.tasks("web"))
    three = requests_per_second(deployment, cluster.nodes)
    print(f"[measured] GET / through nginx: {one:.1f} req/s with 1 web, {three:.1f} with 3 "
          f"(x{three / one:.2f}; 8 clients, every node's nginx)")  # fmt: skip
    deployment.invoke("swarm.scale", "web=2,celery_long=1")
    assert len(deployment.tasks("web")) == 2 and len(deployment.tasks("celery_long")) == 1


def test_drained_then_killed_node(deployment, cluster, uploaded):
    victim = cluster.nodes[-1]
    hostname = victim.removeprefix("mcms-swarm-")
    deployment.docker("node", "update", "--availability", "drain", hostname)
    wait_drained(deployment, hostname)
    cluster.kill(victim)
    killed = time.monotonic()
    alive = cluster.nodes
    deadline = killed + 60
    while True:
        try:
            answers = [deployment.get(node, "/").status_code for node in alive]
        except requests.RequestException:
            answers = []
        if answers and all(code == 200 for code in answers):
            break
        assert time.monotonic() < deadline, f"no answer within 60 s: {answers}"
        time.sleep(1)
    print(f"\n[swarm] site answers on {alive} {time.monotonic() - killed:.1f}s after the kill")
    media, video, _ = uploaded
    for node in alive:
        assert deployment.get(node, media["original_url"], timeout=30).content == video
        state = deployment.get(node, f"/api/v1/media/{media['id']}").json()
        assert state["encoding_status"] == "success"
        assert deployment.get(node, state["encoded_url"], timeout=30).content[4:8] == b"ftyp"
    for service in ("web", "celery_short", "celery_long", "celery_beat"):
        assert hostname not in {node for node, _ in deployment.tasks(service)}


def wait_drained(deployment, hostname, timeout=600) -> None:
    """Until nothing runs on the drained node any more and every service has its tasks."""
    deadline = time.monotonic() + timeout
    while True:
        states = deployment.docker("node", "ps", hostname, "--format", "{{.CurrentState}}").stdout
        active = [s for s in states.splitlines() if s.startswith(("Running", "Starting"))]
        late = ["(node busy)"]
        if not active:
            with pytest.MonkeyPatch.context() as patch:  # the swarm module asks the manager
                patch.setenv("DOCKER_HOST", deployment.cluster.host)
                late = behind(Context(), deployment.settings)
        if not late:
            return
        assert time.monotonic() < deadline, (active, late)
        time.sleep(5)


#: seconds between two answered requests of a RequestLoop
PACE = 0.02


class RequestLoop:
    """GET / through the nodes' nginx until stopped, or at the latest after ``seconds``.

    Like a load balancer in front of host-mode ports, a request whose connection a node
    refuses, or resets before any byte of an answer (its nginx restarting: stop-first,
    see docker-stack.yaml), goes to the next node, as nginx's or HAProxy's balancing
    passes a GET on; such failovers are counted apart. An HTTP error, a timeout, a
    connection cut during the answer or every node refusing is a failure. ``answered`` holds the time each answered
    request was sent at, on the wall clock Swarm's UpdateStatus uses (the nodes are
    containers on this machine).
    """

    def __init__(self, deployment, nodes, seconds=900):
        self.deployment, self.nodes, self.seconds = deployment, nodes, seconds
        self.ok, self.failovers, self.failures = 0, 0, []
        self.answered: list[float] = []
        self.running = True
        self.progress = threading.Condition()
        self.thread = threading.Thread(target=self.loop)

    def one(self, first):
        passed_on = []
        for step in range(len(self.nodes)):
            node = self.nodes[(first + step) % len(self.nodes)]
            try:
                # a new connection each time, as a balancer's (no idle keep-alive to reuse)
                response = requests.get(self.deployment.url(node, "/"),
                                        headers={"Host": "localhost"}, timeout=15)  # fmt: skip
            except requests.ConnectionError as error:
                # urllib3 says "Connection aborted" when no byte of the answer came
                if "refused" not in str(error) and "Connection aborted" not in str(error):
                    return f"{node}: {type(error).__name__}: {str(error)[-120:]}"
                self.failovers += 1
                passed_on.append(f"{node} {'refused' if 'refused' in str(error) else 'reset'}")
                continue
            except requests.RequestException as error:
                return f"{node}: {type(error).__name__}"
            return None if response.status_code == 200 else f"{node}: {response.status_code}"
        return "every node refused the connection: " + ", ".join(passed_on)

    def loop(self):
        stop = time.monotonic() + self.seconds
        count = 0
        while self.running and time.monotonic() < stop:
            sent = time.time()
            failure = self.one(count)
            count += 1
            with self.progress:
                if failure is None:
                    self.ok += 1
                    self.answered.append(sent)
                else:  # when, on the clock of the nodes' task states
                    moment = time.strftime("%H:%M:%S", time.gmtime(sent)) + f".{sent % 1:.2f}"[2:]
                    self.failures.append(f"{moment}Z {failure}")
                self.progress.notify_all()
            # about the pace it had while each request also asked the engine for the
            # node's address: a visitor's probe, not a load test competing with the update
            time.sleep(0.05 if failure is not None else PACE)

    def answered_after(self, moment: float, count: int, timeout: float) -> bool:
        """Wait until the last ``count`` answered requests were all sent after ``moment``
        (wall clock); False if that has not happened within ``timeout`` seconds."""
        with self.progress:
            return self.progress.wait_for(
                lambda: len(self.answered) >= count and self.answered[-count] > moment, timeout
            )

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join(30)


def update_statuses(deployment) -> dict[str, dict]:
    """Each stack service's UpdateStatus (State, StartedAt, CompletedAt); {} if none, and
    for a job (migrations), which is run again, never rolled."""
    names = sorted(stack_services(deployment))
    status = ("{{if or .Spec.Mode.ReplicatedJob .Spec.Mode.GlobalJob}}null"
              "{{else}}{{json .UpdateStatus}}{{end}}")  # fmt: skip
    out = deployment.docker("service", "inspect", "--format", status, *names).stdout
    return {name: json.loads(line) or {}
            for name, line in zip(names, out.splitlines(), strict=True)}  # fmt: skip


def wait_updates_ended(deployment, before: dict[str, dict], timeout=600) -> dict[str, dict]:
    """Until every service's rolling update begun since ``before`` (update_statuses) has
    ended, whatever the task waited for itself (web only); their UpdateStatus."""

    def ended(now: dict[str, dict]) -> bool:
        return all(not status or status == before.get(name) or status["State"] in TERMINAL
                   for name, status in now.items())  # fmt: skip

    def late(now: dict[str, dict]) -> str:
        return f"updates not ended after {timeout}s: {now}"

    now, _ = until(lambda: update_statuses(deployment), ended, late, timeout, 3)
    return {name: status for name, status in now.items() if status and status != before.get(name)}


def wall(timestamp: str) -> float:
    """An engine's RFC 3339 time (nanoseconds cut to micro) as time.time() counts it."""
    return datetime.fromisoformat(timestamp).timestamp()


def retag(deployment, source: str, target: str, web_change: str | None = None) -> None:
    """Push the running images again as version ``target``, web changed by a Dockerfile line."""
    registry = deployment.settings.registry
    for image in ("mediacms/mediacms", "mediacms/mediacms-worker", "mediacms/mediacms-nginx"):
        old, new = f"{registry}{image}:{source}", f"{registry}{image}:{target}"
        if web_change and image == "mediacms/mediacms":
            subprocess.run(["docker", "--host", deployment.cluster.host, "build", "--tag", new, "-"],
                           input=f"FROM {old}\n{web_change}\n", text=True, check=True,
                           capture_output=True)  # fmt: skip
        else:
            deployment.docker("tag", old, new)
        deployment.docker("push", new)


def test_rolling_update_of_web_fails_no_request(deployment, cluster, uploaded):
    """Also the role split of a stack of one role (the round trip above made it so): the
    update gives MediaCMS its plain role, under the same load."""
    assert "POSTGRES_SUPERUSER" not in deployment.settings.values
    version = deployment.settings.version
    retag(deployment, version, f"{version}-next")
    before = update_statuses(deployment)
    with RequestLoop(deployment, cluster.nodes) as loop:
        started = time.monotonic()
        deployment.invoke("swarm.update", "--to", f"{version}-next")
        took = time.monotonic() - started
        # nginx (global) and the workers may still be rolling when the task is done
        updated = wait_updates_ended(deployment, before)
        ended = time.time()
        # the load goes on past that moment: the last answers were all asked for after it
        outlasted = loop.answered_after(ended, count=5, timeout=60)
    print(f"\n[measured] swarm.update (2 web replicas, start-first): {took:.0f}s; "
          f"{loop.ok} requests answered, {len(loop.failures)} failed, {loop.failovers} "
          "refused or reset unanswered by a restarting nginx and sent to another node")  # fmt: skip
    assert loop.failures == [], loop.failures[:20]
    path = [updated.get(f"{STACK}_{name}", {}) for name in ("web", "nginx")]
    assert [status.get("State") for status in path] == ["completed"] * 2, updated
    # from the first start to the last end of the rolling updates, on the engine's clock
    ends = [wall(status["CompletedAt"]) for status in updated.values() if "CompletedAt" in status]
    first, last = min(wall(status["StartedAt"]) for status in updated.values()), max(ends)
    during = sum(first <= sent <= last for sent in loop.answered)
    print(f"[measured] rolling updates over in {last - first:.0f}s, {during} answered meanwhile")
    assert last <= ended and outlasted, (last, ended, loop.answered[-5:])
    assert during >= 20, (during, first, last)
    assert deployment.settings.version == f"{version}-next"
    images = deployment.docker("service", "inspect", f"{STACK}_web", "--format",
                               "{{.Spec.TaskTemplate.ContainerSpec.Image}}").stdout  # fmt: skip
    assert f":{version}-next@" in images
    # the update's own, and the old role's password that web's previous spec (what a
    # rollback returns to) still names: nothing stale
    kept = sorted(stack_secrets(deployment))
    assert len(kept) == len(SECRETS) + 1, kept
    assert sum(name.startswith(f"{STACK}_postgres_password_") for name in kept) == 2, kept
    settings = deployment.settings
    assert (settings.get("POSTGRES_SUPERUSER"), settings.get("POSTGRES_USER")) == (
        "mediacms", "mediacms_app")  # fmt: skip
    assert mediacms_role(deployment) == "f|f|f|mediacms_app"
    media, video, _ = uploaded  # restored above, its rows now the new role's
    for node in cluster.nodes:
        assert deployment.get(node, media["original_url"], timeout=30).content == video, node


def test_broken_image_rolled_back_and_site_keeps_answering(deployment, cluster):
    version = deployment.settings.version
    # uWSGI answers, but its health check asks for a page that does not exist: never healthy
    retag(deployment, version, f"{version}-broken", "ENV HEALTHCHECK_PATH=/no-such-page/")
    with RequestLoop(deployment, cluster.nodes) as loop:
        done = deployment.invoke("swarm.update", "--to", f"{version}-broken", check=False)
    assert done.returncode == 1 and "rolled it back" in done.stderr, done.stderr
    assert deployment.settings.version == version
    images = deployment.docker("service", "inspect", f"{STACK}_web", "--format",
                               "{{.Spec.TaskTemplate.ContainerSpec.Image}}").stdout  # fmt: skip
    assert f":{version}@" in images
    # nginx's ports are host-mode here: should Swarm roll nginx back too, it goes node by
    # node, each stopped before its new task starts, 5 s apart (not Swarm's default: no delay)
    rollback = json.loads(deployment.docker("service", "inspect", f"{STACK}_nginx", "--format",
                                            "{{json .Spec.RollbackConfig}}").stdout)  # fmt: skip
    seen = (rollback["Parallelism"], rollback["Order"], rollback["Delay"])
    assert seen == (1, "stop-first", 5_000_000_000), rollback
    print(f"\n[swarm] broken web rolled back; {loop.ok} requests answered, "
          f"{len(loop.failures)} failed meanwhile ({loop.failovers} failovers)")  # fmt: skip
    assert loop.ok > 20 and loop.failures == [], loop.failures[:20]
