"""Every ``docker compose`` invocation of the project is built here, and only here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from invoke.context import Context
from invoke.runners import Result

from ..stack import config, secrets
from ..stack.config import Settings
from ..stack.errors import StackError
from .shell import dry, poll, run, say

PRODUCTION = "docker-compose.yaml"
HTTPS = "docker-compose-cert.yaml"
METRICS = "docker-compose-metrics.yaml"
DEVELOPMENT = "docker-compose-dev.yaml"


def _on(settings: Settings, key: str) -> bool:
    return settings.get(key).strip().lower() in ("1", "true", "yes", "on")


def uses_https(settings: Settings) -> bool:
    """True when .env says this deployment runs the HTTPS overlay (HTTPS_OVERLAY=true):
    every task (upgrade, restart, logs, down, ...) then includes docker-compose-cert.yaml."""
    return _on(settings, "HTTPS_OVERLAY")


def uses_metrics(settings: Settings) -> bool:
    """True when .env says this deployment runs the metrics overlay (METRICS_OVERLAY=true,
    recorded by `invoke up --metrics`): every task then includes docker-compose-metrics.yaml."""
    return _on(settings, "METRICS_OVERLAY")


@dataclass(frozen=True)
class Compose:
    """A stack: which compose files, which project name, which .env."""

    root: Path
    files: tuple[str, ...] = (PRODUCTION,)
    project: str | None = "mediacms"  # None: compose's own default (folder name, .env)
    env_file: Path | None = None
    #: False: nothing is written beside its files (see :meth:`secret_files`): a dry run's
    #: stack, or another project's files (the 7.x deployment migrate-from-7x reads)
    writes: bool = field(default=True, compare=False)

    #: Labels the engine finds the stack's containers by: the project, the service.
    LABELS = ("com.docker.compose.project", "com.docker.compose.service")

    def service_of(self, label: str) -> str:
        """The service name in a container's service label."""
        return label

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        *,
        dev: bool = False,
        https: bool = False,
        metrics: bool = False,
        writes: bool = True,
    ) -> Compose:
        https = https or uses_https(settings)
        metrics = metrics or uses_metrics(settings)
        overlays = (HTTPS,) * https + (METRICS,) * metrics
        files = (DEVELOPMENT,) if dev else (PRODUCTION, *overlays)
        project = settings.project + ("-dev" if dev else "")
        return cls(settings.root, files, project, settings.env_file, writes)

    def argv(self, *args: str) -> list[str]:
        """The command line of ``docker compose *args`` for this stack, about to run: the
        secret files its containers read are brought up to date first."""
        self.secret_files()
        argv = ["docker", "compose", "--project-directory", str(self.root)]
        if self.project is not None:
            argv += ["--project-name", self.project]
        if self.env_file is not None:
            argv += ["--env-file", str(self.env_file)]
        for name in self.files:
            argv += ["--file", str(self.root / name)]
        return [*argv, *args]

    def run(self, c: Context, *args: str, **kwargs) -> Result | None:
        return run(c, self.argv(*args), **kwargs)

    def secret_files(self) -> None:
        """The production file's secret files, from .env, before a command that may start
        a container reads them (:mod:`..stack.secrets`); a dry run writes nothing."""
        if self.writes and PRODUCTION in self.files:
            secrets.write_for_compose(config.load(self.root, self.env_file))

    def query(self, c: Context, *args: str) -> str:
        """Run a read-only compose command even in dry-run mode and return its stdout."""
        result = run(c, self.argv(*args), query=True, hide="out", in_stream=False)
        return result.stdout if result is not None else ""

    def ps(self, c: Context, *, all_: bool = True) -> list[dict]:
        """Containers of the stack as compose reports them (one dict per container)."""
        out = self.query(c, "ps", "--format", "json", *(["--all"] if all_ else []))
        out = out.strip()
        if not out:
            return []
        if out.startswith("["):
            return json.loads(out)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def existing(self, c: Context) -> dict[str, int]:
        """How many containers (running or not), volumes and networks the engine holds
        under this project's name."""
        found = {}
        for kind in ("container", "volume", "network"):
            listing = ["docker", kind, "ls", "--quiet",
                       "--filter", f"label={self.LABELS[0]}={self.project}"]  # fmt: skip
            if kind == "container":
                listing.insert(3, "--all")
            result = run(c, listing, query=True, hide=True, in_stream=False)
            found[kind] = len(result.stdout.split()) if result is not None else 0
        return found

    # Commands used by several tasks -------------------------------------------------
    def exec(self, c: Context, service: str, *command: str, tty: bool = False, **kwargs):
        flags = [] if tty else ["-T"]
        return self.run(c, "exec", *flags, service, *command, pty=tty, **kwargs)

    def manage(self, c: Context, *command: str, tty: bool = False, **kwargs):
        return self.exec(c, "web", "python", "manage.py", *command, tty=tty, **kwargs)

    def up(self, c: Context, *services: str, wait: bool = True, timeout: int = 300,
           deps: bool = True, **kwargs):  # fmt: skip
        """``up`` stops every container it recreates at once, and starts each new one only
        when its dependencies are ready: ``services`` and ``deps=False`` keep the others
        (e.g. nginx while migrations run) as they are."""
        flags = ["--detach"] + (["--wait", "--wait-timeout", str(timeout)] if wait else [])
        return self.run(c, "up", *flags, *([] if deps else ["--no-deps"]), *services, **kwargs)

    def job(self, c: Context, service: str, *command: str, query: bool = False, **kwargs):
        """A one-off container of ``service`` (its own command unless one is given); the
        services it depends on must run already. ``query``: it only reads, so it runs in
        a dry run too, output captured, a failure returned rather than raised."""
        argv = self.argv("run", "--rm", "--no-deps", "-T", service, *command)
        if query:
            return run(c, argv, query=True, hide=True, warn=True, in_stream=False, **kwargs)
        return run(c, argv, **kwargs)

    def check_can_stop(self, c: Context) -> None:
        """Raise before anything changes when this stack's services cannot be stopped
        from here (compose always can; see :class:`swarm.SwarmStack`)."""

    def scale(self, c: Context, counts: dict[str, int], *, deps: bool = True, timeout: int = 300):
        """Run ``counts`` containers of each service, keeping the running ones as they are;
        ``deps=False`` leaves the services they depend on alone (no migrations job again)."""
        flags = [f"--scale={name}={count}" for name, count in counts.items()]
        return self.run(c, "up", "--detach", "--no-recreate", *([] if deps else ["--no-deps"]),
                        "--wait", "--wait-timeout", str(timeout), *flags, *counts)  # fmt: skip

    def running(self, c: Context, service: str) -> list[str]:
        """The names of ``service``'s running containers, lowest container number first."""
        names = [row["Name"] for row in self.ps(c, all_=False)
                 if row.get("Service") == service and row.get("State") == "running"]  # fmt: skip
        return sorted(names, key=lambda name: int(name.rsplit("-", 1)[1]))

    @property
    def https(self) -> bool:
        """Whether the HTTPS overlay is in: its listeners service then holds the published
        ports, and nginx's containers can come and go while new connections wait."""
        return HTTPS in self.files

    # One container of a service (compose acts on all of them at once): the engine stops
    # it as compose would, SIGTERM then the service's stop_grace_period.
    def restart_container(self, c: Context, name: str):
        return run(c, ["docker", "restart", name])

    def remove_container(self, c: Context, name: str):
        run(c, ["docker", "stop", name])
        return run(c, ["docker", "rm", name])

    def drain_container(self, c: Context, name: str, signal: str) -> None:
        """Remove ``name`` after ``signal`` (its graceful stop: SIGQUIT for nginx, which
        closes its listeners and ends the responses under way) and at most its
        stop_grace_period (10 s when it has none); what is still under way then is cut.
        Its restart policy goes first: the engine would otherwise start it again."""
        run(c, ["docker", "update", "--restart", "no", name])
        run(c, ["docker", "kill", "--signal", signal, name])
        if not dry(c):
            inspect = ["docker", "inspect", "--format"]
            grace = run(c, [*inspect, "{{.Config.StopTimeout}}", name], query=True, hide=True)
            seconds = int(grace.stdout.strip()) if grace.stdout.strip().isdigit() else 10
            try:
                poll(c, [*inspect, "{{.State.Running}}", name],
                     lambda result: result.stdout.strip() == "false", timeout=seconds,
                     interval=0.5, what=f"{name} ending what it serves", hide=True)  # fmt: skip
            except StackError as error:
                say(f"{error}: what it still serves is cut")
        run(c, ["docker", "rm", "--force", name])
