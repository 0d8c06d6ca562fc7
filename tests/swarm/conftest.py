"""The multi-node test's cluster and deployment (see cluster.py), made once per session.

The deployment folder holds only docker-stack.yaml (its app and data networks
unencrypted: see ENCRYPTED) and a .env, outside this repository. Images are those `nox -s swarm` built
from tests/app, handed to the nodes through the cluster's registry with `invoke push`. Whatever happens, every
container, volume and network of the cluster is removed at the end (SWARM_KEEP=1 keeps
them for debugging: remove them with `docker rm -f -v` and `docker volume rm` of the
mcms-swarm-* names).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from mediacms_stack.stack import config
from mediacms_stack.stack.model import ImageNames
from tests.fresh import require_built_from_this_commit
from tests.swarm.cluster import PREFIX, REGISTRY, SHARED, Cluster

REPO = config.ROOT
ADMIN_PASSWORD = "swarm-Admin-pw-1"
PORT = 8000
STACK = "mcms-swarm"
PORTAL_NAME = "Swarm Portal From Custom"
CUSTOM_CSS = "body { color: #5a3a11; }\n"


class Deployment:
    """The stack on the cluster, driven through this repository's invoke tasks."""

    def __init__(self, cluster: Cluster, home: Path) -> None:
        self.cluster = cluster
        self.home = home

    @property
    def settings(self) -> config.Settings:
        return config.load(self.home)

    def env(self, host: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("MEDIACMS_ENV_FILE", None)
        env.update(MEDIACMS_HOME=str(self.home), DOCKER_HOST=host or self.cluster.host)
        return env

    def invoke(self, *args: str, check: bool = True, host: str | None = None,
               input: str | None = None) -> subprocess.CompletedProcess:  # fmt: skip
        """An invoke task run as the operator runs it, DOCKER_HOST at the manager (or
        ``host``); stdin is ``input`` (no terminal)."""
        done = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), *args],
                              env=self.env(host), capture_output=True, text=True, check=False,
                              input=input if input is not None else "")  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"invoke {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """A docker command against the manager."""
        return subprocess.run(["docker", "--host", self.cluster.host, *args], check=check,
                              capture_output=True, text=True)  # fmt: skip

    def url(self, node: str, path: str = "/") -> str:
        return f"http://{self.cluster.ip(node)}:{PORT}{path}"

    def get(self, node: str, path: str = "/", **kwargs) -> requests.Response:
        # nginx answers only for FRONTEND_HOST's name
        return requests.get(self.url(node, path), headers={"Host": "localhost"},
                            timeout=kwargs.pop("timeout", 10), **kwargs)  # fmt: skip

    def tasks(self, service: str) -> list[tuple[str, str]]:
        """(node hostname, current state) of the service's tasks meant to run."""
        out = self.docker("service", "ps", f"{STACK}_{service}", "--filter",
                          "desired-state=running", "--format", "{{.Node}}\t{{.CurrentState}}").stdout  # fmt: skip
        return [tuple(line.split("\t")) for line in out.splitlines() if line]


def env_values() -> dict[str, str]:
    return {
        "COMPOSE_PROJECT_NAME": STACK,
        # the images `nox -s swarm` built in this run (its .env's version)
        "MEDIACMS_VERSION": built_version(),
        "IMAGE_REGISTRY": f"{REGISTRY}/",
        "POSTGRES_IMAGE": f"{REGISTRY}/mediacms-local/postgres:17",
        "REDIS_IMAGE": f"{REGISTRY}/mediacms-local/redis:8",
        "MEDIA_VOLUME_TYPE": "none",
        "MEDIA_VOLUME_OPTIONS": "bind",
        "MEDIA_VOLUME_DEVICE": f"{SHARED}/media",
        "SWARM_ENDPOINT_MODE": "dnsrr",
        "SWARM_PUBLISH_MODE": "host",
        "HTTP_PORT": str(PORT),
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "WEB_REPLICAS": "2",
        "UWSGI_PROCESSES": "2",
        "CELERY_SHORT_CONCURRENCY": "1",
        # not the default, so that test_swarm sees it reach the services' /tmp
        "TMPFS_SIZE": "96m",
    }


def built_version() -> str:
    return config.load(REPO, os.environ.get("MEDIACMS_ENV_FILE")).version


def local_images(version: str) -> list[str]:
    names = ImageNames("", version)
    values = config.load(REPO, os.environ.get("MEDIACMS_ENV_FILE")).values
    return [*(names.ref(t) for t in ("web", "worker", "nginx")),
            values.get("POSTGRES_IMAGE") or "mediacms-local/postgres:17",
            values.get("REDIS_IMAGE") or "mediacms-local/redis:8"]  # fmt: skip


def push_images(cluster: Cluster, deployment: Deployment, version: str) -> None:
    """Our images to the manager, then `invoke push` (and the stand-ins) to the registry."""
    require_built_from_this_commit(version)
    images = local_images(version)
    cluster.load_images(images)
    deployment.invoke("push", "--target", "web", "--target", "worker", "--target", "nginx")
    for image in images[3:]:
        deployment.docker("tag", image, f"{REGISTRY}/{image}")
        deployment.docker("push", f"{REGISTRY}/{image}")


@pytest.fixture(scope="session")
def cluster():
    made = Cluster()
    started = time.monotonic()
    try:
        made.create()
        made.form_swarm()
        print(f"\n[swarm] {made.size} nodes up in {time.monotonic() - started:.0f}s")
        yield made
    finally:
        if os.environ.get("SWARM_KEEP") != "1":
            made.destroy()
            shutil.rmtree(made.sockets, ignore_errors=True)


#: The app and data networks' IPsec, taken out of the test's copy of the stack file: the
#: test machines' kernel has no ESP (CONFIG_INET_ESP unset; `ip xfrm state add ... proto esp`
#: fails with "Requested type not found"), so no node can install the security
#: associations an encrypted overlay needs, and web, db and Redis would be unreachable
#: from the other nodes. Docker encrypts when the option is there at all, whatever its value.
ENCRYPTED = '\n    driver_opts:\n      encrypted: "true"\n'


@pytest.fixture(scope="session")
def deployment(cluster, tmp_path_factory) -> Deployment:
    home = tmp_path_factory.mktemp(f"{PREFIX}home")
    stack = (REPO / "docker-stack.yaml").read_text()
    assert stack.count(ENCRYPTED) == 2, "the networks' encryption moved: update ENCRYPTED"
    (home / "docker-stack.yaml").write_text(stack.replace(ENCRYPTED, "\n"))
    (home / "custom" / "static" / "css").mkdir(parents=True)
    (home / "custom" / "local_settings.py").write_text(f'PORTAL_NAME = "{PORTAL_NAME}"\n')
    (home / "custom" / "static" / "css" / "custom.css").write_text(CUSTOM_CSS)
    config.init(home, env_values(), example=REPO / config.EXAMPLE_FILE)
    made = Deployment(cluster, home)
    started = time.monotonic()
    push_images(cluster, made, made.settings.version)
    print(f"[swarm] images in the registry after {time.monotonic() - started:.0f}s")
    return made


#: What a failed test's report shows of each service: its tasks, and its last log lines.
TOLD = {"nginx": 30, "web": 30, "db": 30, "migrations": 40}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test that used the deployment reports where the tasks of the services in
    TOLD run and the last lines they wrote (every node's, through the manager)."""
    report = yield
    deployment = getattr(item, "funcargs", {}).get("deployment")
    if report.failed and isinstance(deployment, Deployment):
        for name, lines in TOLD.items():
            service = f"{STACK}_{name}"
            tasks = deployment.docker("service", "ps", "--no-trunc", service, check=False)
            logs = deployment.docker("service", "logs", "--timestamps", "--tail", str(lines),
                                     service, check=False)  # fmt: skip
            report.sections.append((f"swarm service {name}", "\n".join(
                (tasks.stdout, tasks.stderr, logs.stdout, logs.stderr))))  # fmt: skip
    return report
