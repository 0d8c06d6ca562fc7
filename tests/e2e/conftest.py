"""A real production stack for the end-to-end tests, deployed the way the seed promises.

The deployment folder holds only docker-compose.yaml, a .env and custom/, outside this
repository (so the production file is proven to work on its own). Images are the ones
`nox -s smoke` built from tests/app. Ports are published on 127.0.0.1 only. Whatever
happens, the stack and its volumes are removed at the end; a failed test's report
carries its stacks' containers and last log lines.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dotenv import dotenv_values

from mediacms_stack.engines.compose import Compose
from mediacms_stack.stack import config
from tests import leftovers
from tests.fresh import require_built_from_this_commit

REPO = config.ROOT
ADMIN_PASSWORD = "smoke-Admin-pw-1"
NGINX_PROBLEM = re.compile(r"\[(warn|error|crit|alert|emerg)\]")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Stack:
    """The deployment under test, with helpers to drive it through invoke and compose."""

    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.settings = config.load(home)
        self.compose = Compose.for_settings(self.settings)
        self.admin_password = ADMIN_PASSWORD

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("MEDIACMS_ENV_FILE", None)
        env["MEDIACMS_HOME"] = str(self.home)
        return env

    def invoke(self, *args: str, check: bool = True, input_: str | None = None):
        """Run an invoke task of this repository against the deployment."""
        done = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), *args],
                              env=self.env(), capture_output=True, text=True, input=input_,
                              check=False)  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"invoke {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def dc(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.compose.argv(*args), capture_output=True, check=check,
                              text=kwargs.pop("text", True), **kwargs)  # fmt: skip

    def url(self, path: str) -> str:
        return self.base + path

    def wait_http(self, path: str = "/", timeout: float = 120) -> requests.Response:
        deadline = time.monotonic() + timeout
        while True:
            try:
                response = requests.get(self.url(path), timeout=10)
                if response.status_code < 500:
                    return response
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} did not answer within {timeout}s")
            time.sleep(1)


#: Modules that take longest (the time table `tests/timing.py` prints after a run),
#: handed to the workers first: with `--dist loadfile` a long module that starts last
#: keeps one worker busy while the others have finished. Any module missing here runs
#: after these, in file order.
SLOWEST_FIRST = [
    "test_upgrade.py", "test_operations.py", "test_offsite.py", "test_upgrade_gate.py",
    "test_status_encodings.py", "test_db_role.py", "test_upgrade_postgres.py",
    "test_zero_downtime.py", "test_migrate_from_7x.py", "test_restore_replaces.py",
    "test_security_compose.py", "test_media_gate_cache.py", "test_dev.py", "test_https.py",
    "test_backup_verify.py", "test_security_host.py", "test_beat_health.py", "test_email.py",
    "test_redis_uploads.py", "test_checklist.py",
]  # fmt: skip


#: The start of an access-log line of nginx (nginx.conf's log_format main), which its own
#: error lines ("2026/12/06 09:43:14 [error] ...", written at once) do not have
ACCESS_LINE = re.compile(r"^\S+ - \S+ \[")


def access_log(deployment, marker: str, count: int = 1, timeout: float = 10) -> list[str]:
    """nginx's access-log lines holding ``marker``, once there are at least ``count``:
    nginx writes that log in buffers flushed every second (nginx.conf), so a line is
    there within about a second of its request, not at once."""
    deadline = time.monotonic() + timeout
    while True:
        out = deployment.dc("logs", "--no-log-prefix", "nginx").stdout
        lines = [line for line in out.splitlines() if marker in line and ACCESS_LINE.match(line)]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules that bring only their own stacks first, then those on the worker's shared
    `stack` (each group slowest first). A worker's shared stack starts with the first test
    that asks for it and lives to the end of the run; an idle stack costs about a seventh
    of a core (its health checks, measured: 0.13 of a core), so it should not idle
    through the other modules."""
    rank = {name: place for place, name in enumerate(SLOWEST_FIRST)}
    shared = {item.path.name for item in items if "stack" in item.fixturenames}
    items.sort(key=lambda item: (item.path.name in shared, rank.get(item.path.name, len(rank))))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Once per run (not per xdist worker, not when only collecting): a killed earlier
    run's stacks go before this one needs their address pools."""
    if not hasattr(session.config, "workerinput") and not session.config.option.collectonly:
        leftovers.sweep()


def new_deployment(home: Path, project: str, **extra: str) -> Stack:
    """A deployment folder holding only docker-compose.yaml, custom/ and a fresh .env."""
    shutil.copy(REPO / "docker-compose.yaml", home / "docker-compose.yaml")
    (home / "custom").mkdir()
    built = dotenv_values(REPO / os.environ.get("MEDIACMS_ENV_FILE", config.ENV_FILE))
    port = free_port()
    overrides = {
        key: built[key]
        for key in (
            "MEDIACMS_VERSION",
            "IMAGE_REGISTRY",
            "BASE_IMAGE",
            "POSTGRES_IMAGE",
            "REDIS_IMAGE",
        )
        if built.get(key) is not None
    }
    overrides |= {
        "COMPOSE_PROJECT_NAME": project,
        "HTTP_BIND": "127.0.0.1",
        "HTTP_PORT": str(port),
        "FRONTEND_HOST": f"http://127.0.0.1:{port}",
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "CELERY_SHORT_CONCURRENCY": "2",
        **extra,
    }
    config.init(home, overrides, example=REPO / config.EXAMPLE_FILE)
    return Stack(home, port)


def story(deployment: Stack) -> str:
    """What a failure needs said about a stack: its containers, the app's and nginx's last
    lines, and nginx's own warnings and errors (which its access log pushes out of a tail)."""
    web = deployment.dc("logs", "--tail", "60", "web", check=False).stdout
    return "\n".join([
        "=== docker compose ps ===", deployment.dc("ps", "--all", check=False).stdout,
        "=== web (last 60 lines) ===", web,
        "=== nginx warnings and errors (last 40) ===", *nginx_problems(deployment, 40),
    ])  # fmt: skip


def report_failure(deployment: Stack) -> None:
    """For a fixture's own teardown (seen when run without xdist)."""
    print(story(deployment), file=sys.stderr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test's report carries the story of each stack it used: a section of the
    report, so it reaches the output also from an xdist worker (a print at teardown
    does not)."""
    report = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            stack = value if isinstance(value, Stack) else getattr(value, "stack", None)
            if isinstance(stack, Stack):  # a Stack, or a deployment around one (HTTPS)
                report.sections.append((f"stack {name} ({stack.base})", story(stack)))
    return report


def nginx_problems(deployment: Stack, last: int) -> list[str]:
    """nginx's own last warnings and errors (an upstream that timed out, refused, did not
    resolve; a body it could not write)."""
    nginx = deployment.dc("logs", "--no-log-prefix", "nginx", check=False).stdout
    return [line for line in nginx.splitlines() if NGINX_PROBLEM.search(line)][-last:]


@contextlib.contextmanager
def running(deployment: Stack, request: pytest.FixtureRequest, *up_args: str) -> Iterator[Stack]:
    """``deployment`` after `invoke up *up_args` (of images built from the commit under
    test; .env read again after it, for what `up` records there, e.g. an overlay). A
    failed `up` raises with the stack's story (a failed test's report carries it: the
    hook above); on the way out it goes with its volumes (SMOKE_KEEP_STACK=1 leaves it running, a debugging aid)."""
    require_built_from_this_commit(deployment.settings.version)
    started = time.monotonic()
    up = deployment.invoke("up", *up_args, check=False)
    deployment.startup_seconds = time.monotonic() - started
    deployment.settings = config.load(deployment.home)
    deployment.compose = Compose.for_settings(deployment.settings)
    try:
        if up.returncode != 0:
            raise AssertionError(
                f"invoke up failed:\n{up.stdout[-3000:]}\n{up.stderr[-5000:]}\n{story(deployment)}"
            )
        yield deployment
    finally:
        if os.environ.get("SMOKE_KEEP_STACK") == "1":
            print(f"\nstack kept: MEDIACMS_HOME={deployment.home} ({deployment.base})",
                  file=sys.stderr)  # fmt: skip
        else:
            # 30 s, not each service's stop_grace_period (web 310 s, celery_long 10 min):
            # the stack goes, what runs in it needs no graceful end
            deployment.dc("down", "--volumes", "--remove-orphans", "--timeout", "30",
                          check=False)  # fmt: skip


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    home = tmp_path_factory.mktemp("deployment")
    with running(new_deployment(home, f"mediacms-smoke-{os.getpid()}"), request) as deployment:
        yield deployment


@pytest.fixture(scope="session")
def admin(stack: Stack) -> requests.auth.HTTPBasicAuth:
    return requests.auth.HTTPBasicAuth("admin", ADMIN_PASSWORD)
