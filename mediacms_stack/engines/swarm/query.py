"""Read-only questions to the engine DOCKER_HOST reaches: nothing here changes the cluster."""

from __future__ import annotations

from collections import Counter

from invoke.context import Context

from ...stack.config import Settings
from ..shell import run
from .stack import label, service


def _query(c: Context, argv: list[str], *, may_fail: bool = False) -> str:
    """A read-only command's stdout. With ``may_fail`` (a worker cannot list services) a
    failure gives nothing instead of an error."""
    if may_fail:
        result = run(c, argv, query=True, hide=True, warn=True, in_stream=False)
        return result.stdout if result is not None and result.ok else ""
    result = run(c, argv, query=True, hide="out", in_stream=False)
    return result.stdout if result is not None else ""


def _engine_role(c: Context) -> str:
    """'NODE-NAME true' on a manager, 'NODE-NAME false' on a worker (the reached engine)."""
    return _query(c, ["docker", "info", "--format", "{{.Name}} {{.Swarm.ControlAvailable}}"],
                  may_fail=True)  # fmt: skip


def data_nodes(c: Context, settings: Settings) -> list[str]:
    """Hostnames of the nodes whose data label is true (db and redis run there)."""
    out = _query(c, ["docker", "node", "ls", "--format", "{{.ID}}"])
    ids = out.split()
    if not ids:
        return []
    template = f'{{{{.Description.Hostname}}}} {{{{index .Spec.Labels "{label(settings)}"}}}}'
    rows = _query(c, ["docker", "node", "inspect", "--format", template, *ids])
    return [name for name, _, value in (row.partition(" ") for row in rows.splitlines())
            if value.strip() == "true"]  # fmt: skip


def services(
    c: Context, settings: Settings, *, may_fail: bool = False
) -> list[tuple[str, str, str, str]]:
    """(name, mode, replicas, image) of every service of the stack (``may_fail``: none where
    the engine cannot tell, e.g. a worker)."""
    out = _query(c, ["docker", "stack", "services", settings.project, "--format",
                     "{{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Image}}"], may_fail=may_fail)  # fmt: skip
    return [tuple(line.split("\t")) for line in out.splitlines() if line.strip()]


def running_tasks(c: Context, settings: Settings) -> Counter[str]:
    """Per service, its tasks that are meant to run and do (health checks passed).

    `docker service ls` counts tasks by their last reported state, which a dead node
    never updates: its tasks would still count as running. Tasks Swarm has replaced are
    asked to shut down, so only those meant to run are counted here.
    """
    out = _query(c, ["docker", "stack", "ps", settings.project, "--filter",
                     "desired-state=running", "--format", "{{.Name}}\t{{.CurrentState}}"])  # fmt: skip
    counts: Counter[str] = Counter()
    for line in out.splitlines():
        name, _, state = line.partition("\t")
        if state.startswith("Running"):
            counts[name.rsplit(".", 1)[0]] += 1
    return counts


def update_state(c: Context, settings: Settings, name: str) -> tuple[str, str]:
    """(state, started-at) of the service's last rolling update; empty when none ran."""
    out = _query(c, ["docker", "service", "inspect", service(settings, name), "--format",
                     "{{if .UpdateStatus}}{{.UpdateStatus.State}} "
                     "{{.UpdateStatus.StartedAt}}{{end}}"])  # fmt: skip
    state, _, started = out.strip().partition(" ")
    return state, started


def running_image(c: Context, settings: Settings, name: str) -> str:
    out = _query(c, ["docker", "service", "inspect", service(settings, name), "--format",
                     "{{.Spec.TaskTemplate.ContainerSpec.Image}}"])  # fmt: skip
    return out.strip()
