"""The development workflow end to end: `invoke dev`, `invoke test`, `invoke build-frontend`.

The MediaCMS checkout is a copy of tests/app in a temporary folder, fresh like a clone
(no logs/, media_files/ or node_modules/) and owned by uid 1000 like a developer's
checkout when the tests run as root, so nothing is written into this repository; the
last test proves nothing in it ended up owned by anyone else. The stack gets its own
compose project, its own image tag (so `invoke dev` builds the dev image from the
checkout, and the rebuilt production images replace nobody's) and random ports on
127.0.0.1. Both projects are removed with their volumes and the images tagged for this
run are deleted at the end; on failure `ps` and the logs are printed first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dotenv import dotenv_values
from invoke import Context

from mediacms_stack.engines.compose import Compose
from mediacms_stack.stack import config
from mediacms_stack.stack.model import ImageNames

pytestmark = pytest.mark.e2e

REPO = config.ROOT
DEV_UID = 1000  # a typical developer's uid; the checkout is handed to it when we are root
CARRIED = ("IMAGE_REGISTRY", "BASE_IMAGE", "POSTGRES_IMAGE", "REDIS_IMAGE", "NODE_IMAGE",
           "BUILD_CA_BUNDLE", "FFMPEG_SOURCE")  # fmt: skip


#: What a fresh clone of tests/app lacks (generated or ignored by git), per folder.
NOT_IN_A_CLONE = {
    ".": {"media_files", "logs", ".secret_key", ".pytest_cache"},
    "frontend": {"node_modules", "dist", "package-lock.json", ".env"},
}


def fresh(folder: str, names: list[str]) -> set[str]:
    """copytree's ignore: tests/app as a fresh clone has it."""
    left_out = NOT_IN_A_CLONE.get(Path(folder).relative_to(REPO / "tests/app").as_posix(), set())
    return set(names) & (left_out | {"__pycache__"})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DevStack:
    """A checkout copy, its .env, and helpers to drive it through invoke and compose."""

    def __init__(self, work: Path, source: Path = REPO / "tests/app") -> None:
        self.token = uuid.uuid4().hex[:10]
        self.tree = work / "mediacms"
        ignore = fresh if source == REPO / "tests/app" else shutil.ignore_patterns("__pycache__")
        shutil.copytree(source, self.tree, symlinks=True, ignore=ignore)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", f"{DEV_UID}:{DEV_UID}", str(self.tree)], check=True)
        self.ports = {key: free_port() for key in ("DEV_PORT", "FRONTEND_DEV_PORT", "HTTP_PORT")}
        built = dotenv_values(REPO / os.environ.get("MEDIACMS_ENV_FILE", config.ENV_FILE))
        overrides = {key: built[key] for key in CARRIED if built.get(key)}
        overrides |= {
            "COMPOSE_PROJECT_NAME": f"mediacms-devtest-{os.getpid()}",
            "MEDIACMS_VERSION": f"devtest-{self.token}",
            "MEDIACMS_TREE": str(self.tree),
            "MEDIACMS_SOURCE": str(self.tree),
            "DEV_BIND": "127.0.0.1",
            "HTTP_BIND": "127.0.0.1",
            "FRONTEND_HOST": f"http://127.0.0.1:{self.ports['HTTP_PORT']}",
            "CELERY_SHORT_CONCURRENCY": "1",
            **{key: str(port) for key, port in self.ports.items()},
        }
        self.env_file = config.init(work, overrides, env_file="dev.env",
                                    example=REPO / config.EXAMPLE_FILE)  # fmt: skip
        self.settings = config.load(REPO, self.env_file)
        self.dev = Compose.for_settings(self.settings, dev=True)
        self.prod = Compose.for_settings(self.settings)
        self.images = [ImageNames.from_settings(self.settings).ref(t)
                       for t in ("dev", "web", "worker", "nginx")]  # fmt: skip
        self.timings: dict[str, float] = {}

    def write(self, relative: str, text: str) -> Path:
        """Write a file into the checkout as its owner would (the tests may run as root)."""
        path = self.tree / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        owner = self.tree.stat()
        for made in (path.parent, path):
            os.chown(made, owner.st_uid, owner.st_gid)
        return path

    def invoke(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "MEDIACMS_HOME"}
        env["MEDIACMS_ENV_FILE"] = str(self.env_file)
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), *args],
                              env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              check=False)  # fmt: skip
        self.timings[" ".join(args)] = round(time.monotonic() - started, 1)
        if check and done.returncode != 0:
            raise AssertionError(f"invoke {' '.join(args)} failed ({done.returncode}):\n"
                                 f"{done.stdout[-4000:]}\n{done.stderr[-6000:]}")  # fmt: skip
        return done

    def dc(self, compose: Compose, *args: str, check: bool = True):
        return subprocess.run(compose.argv(*args), capture_output=True, text=True, check=check)

    def url(self, port_key: str, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.ports[port_key]}{path}"

    def remove(self) -> None:
        """Both projects with their volumes, and the images tagged for this run."""
        for compose in (self.dev, self.prod):
            self.dc(compose, "down", "--volumes", "--remove-orphans", check=False)
        present = [ref for ref in self.images
                   if subprocess.run(["docker", "image", "inspect", ref], capture_output=True,
                                     check=False).returncode == 0]  # fmt: skip
        if present:
            subprocess.run(["docker", "image", "rm", *present], capture_output=True, check=False)
        print(f"\n[dev] timings (s): {self.timings}", file=sys.stderr)

    def report(self) -> None:
        for compose in (self.dev, self.prod):
            print(f"\n=== {compose.project}: docker compose ps ===", file=sys.stderr)
            print(self.dc(compose, "ps", "--all", check=False).stdout, file=sys.stderr)
            print(f"=== {compose.project}: logs (last 80 lines each) ===", file=sys.stderr)
            print(self.dc(compose, "logs", "--tail", "80", check=False).stdout, file=sys.stderr)


@contextlib.contextmanager
def deployed(stack: DevStack, request: pytest.FixtureRequest) -> Iterator[DevStack]:
    """The stack for a module's tests: on a failure in them `ps` and logs are printed,
    and whatever happens it is removed with its volumes and images."""
    failed_before = request.session.testsfailed
    try:
        yield stack
    finally:
        if request.session.testsfailed > failed_before:
            stack.report()
        stack.remove()


@pytest.fixture(scope="module")
def devstack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    repo_css = (REPO / "tests/app/static/css/app.css").read_bytes()
    with deployed(DevStack(tmp_path_factory.mktemp("devstack")), request) as stack:
        yield stack
    assert (REPO / "tests/app/static/css/app.css").read_bytes() == repo_css


def published_hosts(stack: DevStack, service: str) -> set[str]:
    ids = stack.dc(stack.dev, "ps", "-q", service).stdout.split()
    out = subprocess.run(["docker", "inspect", "--format",
                          "{{range $p, $b := .HostConfig.PortBindings}}{{range $b}}"
                          "{{.HostIp}} {{end}}{{end}}", *ids],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return set(out.split())


def test_invoke_dev_starts_runserver_with_debug_and_the_frontend_dev_server(devstack):
    done = devstack.invoke("dev")
    runserver, frontend = devstack.url("DEV_PORT"), devstack.url("FRONTEND_DEV_PORT")
    assert f"runserver  {runserver}" in done.stdout and f"frontend   {frontend}" in done.stdout
    assert "--target dev" in done.stderr  # the dev image was missing: built from the checkout
    states = {r["Service"]: (r["State"], r.get("Health", "")) for r in devstack.dev.ps(Context())}
    for service in ("web", "celery_worker", "celery_beat", "frontend", "db", "redis"):
        assert states[service] == ("running", "healthy"), states

    page = requests.get(runserver, timeout=10)
    assert page.status_code == 200 and "<h1>MediaCMS</h1>" in page.text
    assert requests.get(devstack.url("DEV_PORT", "/api/v1/config"), timeout=10).json()["debug"]
    missing = requests.get(devstack.url("DEV_PORT", "/no-such-page/"), timeout=10)
    assert missing.status_code == 404 and "DEBUG = True" in missing.text  # Django's debug page
    assert "Starting development server" in devstack.dc(devstack.dev, "logs", "web").stdout

    dev_page = requests.get(frontend, timeout=10)
    assert dev_page.status_code == 200 and "frontend dev" in dev_page.text
    assert requests.get(devstack.url("FRONTEND_DEV_PORT", "/static/css/app.css"),
                        timeout=10).status_code == 200  # fmt: skip
    for service in ("web", "frontend"):
        assert published_hosts(devstack, service) == {"127.0.0.1"}


def test_frontend_writes_as_the_checkout_owner_and_npm_trusts_the_ca_bundle(devstack):
    owner = devstack.tree.stat().st_uid
    dist = devstack.tree / "frontend/dist/static/css/app.css"
    assert dist.is_file() and dist.stat().st_uid == owner
    if not devstack.settings.get("BUILD_CA_BUNDLE"):
        pytest.skip("BUILD_CA_BUNDLE is not set in the CI env file")
    ping = devstack.dc(devstack.dev, "exec", "-T", "frontend", "npm", "ping", check=False)
    assert ping.returncode == 0 and "PONG" in ping.stdout + ping.stderr, ping.stderr


PROBE = '''"""Written by tests/e2e/test_dev.py: where and how `invoke test` runs pytest."""
import os
import sys

from django.conf import settings


def test_runs_in_the_dev_image_with_testing_true():
    assert os.environ["TESTING"] == "True" and settings.TESTING
    assert settings.CELERY_TASK_ALWAYS_EAGER
    assert os.environ["DEVELOPMENT_MODE"] == "True"
    assert os.environ["MEDIACMS_VERSION"] == "{version}"
    assert sys.prefix == "/home/mediacms.io"
'''


def test_invoke_test_runs_pytest_in_the_dev_image_with_testing_true(devstack):
    devstack.write("tests/test_dev_probe.py", PROBE.replace("{version}", devstack.settings.version))
    done = devstack.invoke("test", "--args", "-v")
    assert "TESTING=True web pytest" in done.stderr
    assert "tests/test_dev_probe.py::test_runs_in_the_dev_image_with_testing_true PASSED" in (
        done.stdout
    )
    assert "tests/test_upload.py" in done.stdout and " failed" not in done.stdout
    assert " passed" in done.stdout.splitlines()[-1]

    devstack.write("probe_fail/test_fails.py", "def test_fails():\n    assert 1 == 2\n")
    failed = devstack.invoke("test", "--args", "probe_fail/test_fails.py", check=False)
    assert failed.returncode != 0 and "1 failed" in failed.stdout


def test_build_frontend_changes_the_static_file_runserver_serves(devstack):
    rule = f".dev-e2e-{devstack.token} {{ color: #123456; }}"
    source = (devstack.tree / "frontend/src/app.css").read_text()
    devstack.write("frontend/src/app.css", source + f"\n/* added by the e2e test */\n{rule}\n")
    devstack.write("frontend/.env", f"MEDIACMS_BUILD_ID=e2e-{devstack.token}\n")

    done = devstack.invoke("build-frontend")
    assert "npm run dist" in done.stderr and "restart web" in done.stderr
    static = devstack.tree / "static/css/app.css"
    assert rule in static.read_text() and f"MEDIACMS_BUILD_ID=e2e-{devstack.token}" in (
        static.read_text()
    )  # frontend/.env was honoured
    assert static.stat().st_uid == devstack.tree.stat().st_uid
    # the task returns once the restarted web is healthy again: no waiting here
    served = requests.get(devstack.url("DEV_PORT", "/static/css/app.css"), timeout=10)
    assert served.status_code == 200 and rule in served.text
    dev_server = requests.get(devstack.url("FRONTEND_DEV_PORT", "/static/css/app.css"), timeout=10)
    assert rule in dev_server.text
    assert "invoke build` and `invoke up`" in done.stdout


def test_rebuilt_images_let_nginx_serve_the_new_frontend(devstack):
    rule = f".dev-e2e-{devstack.token}"
    devstack.invoke("down", "--dev", "--volumes")
    devstack.invoke("build", "--target", "web", "--target", "worker", "--target", "nginx")
    devstack.invoke("up")
    css = requests.get(devstack.url("HTTP_PORT", "/static/css/app.css"), timeout=10)
    assert css.status_code == 200 and rule in css.text
    assert css.headers.get("Server", "").startswith("nginx")


def test_the_checkout_stays_its_owners(devstack):
    """After dev, test, build-frontend: every file in the checkout is still its owner's."""
    tree, owner = devstack.tree, devstack.tree.stat()
    # written by the dev containers: Django's log (settings create logs/ on import), the
    # default media (migrations job), npm's output
    assert (tree / "logs/debug.log").is_file() and (tree / "media_files").is_dir()
    assert (tree / "frontend/node_modules").is_dir()
    # the file: dependency is linked, not packed (whose copy would lack dist/)
    assert (tree / "frontend/node_modules/mediacms-test-scripts").is_symlink()
    # nothing is mounted inside the checkout, so Docker made no mount points in it
    for name in ("cms/local_settings.py", "cms/container_settings.py", "cms/stack_urls.py",
                 "cms/stack_tasks.py", "custom"):  # fmt: skip
        assert not (tree / name).exists(), name
    strangers = [
        f"{path.relative_to(tree)} {info.st_uid}:{info.st_gid}"
        for path in (tree, *tree.rglob("*"))
        if ((info := path.lstat()).st_uid, info.st_gid) != (owner.st_uid, owner.st_gid)
    ]
    assert not strangers, strangers
