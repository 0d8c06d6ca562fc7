"""The swarm.* tasks: init, deploy, scale, update, rollback, status. A deploy or update
is refused before the cluster changes (:mod:`.checks`), waits until every service is
healthy (:mod:`.poll`), then removes the secrets and configs no service uses any more."""

from __future__ import annotations

from invoke.context import Context

from ...stack import config
from ...stack.config import Settings
from ...stack.errors import StackError
from ...stack.model import APP_SERVICES, ImageNames
from ..shell import dry, run, say
from .checks import preflight
from .inputs import stack_deploy
from .poll import wait, wait_update
from .query import _query, running_image, services, update_state
from .stack import ORCHESTRATOR, deployed_on_swarm, label, service


def init(c: Context, settings: Settings, *, advertise_addr: str | None,
         data_node: str | None) -> None:  # fmt: skip
    """Make this engine a swarm manager (if it is not one yet) and label the data node."""
    active = _query(c, ["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"]).strip()
    if active != "active":
        argv = ["docker", "swarm", "init", *(["--advertise-addr", advertise_addr]
                                             if advertise_addr else [])]  # fmt: skip
        run(c, argv)
    node = data_node or "self"
    run(c, ["docker", "node", "update", "--label-add", f"{label(settings)}=true", node])
    say(f"db and redis will run on {node}; join workers with "
        "`docker swarm join-token worker`")  # fmt: skip


def deploy(c: Context, settings: Settings, *, timeout: float = 600) -> None:
    node = preflight(c, settings) if not dry(c) else "(not checked: dry run)"
    stack_deploy(c, settings)
    if dry(c):
        return
    took = wait(c, settings, timeout)
    say(f"{settings.project}: every service healthy after {took:.0f}s "
        f"(db and redis on {node})")  # fmt: skip
    prune_unused(c, settings)
    if not deployed_on_swarm(settings):  # recorded once the stack is healthy on Swarm
        config.update(settings, {ORCHESTRATOR: "swarm"})
        say(f"{ORCHESTRATOR}=swarm in {settings.env_file}: backup, restore, manage "
            "and admin-shell drive this Swarm stack from now on")  # fmt: skip


def scale(c: Context, settings: Settings, counts: dict[str, int]):
    argv = ["docker", "service", "scale",
            *(f"{service(settings, name)}={count}" for name, count in counts.items())]  # fmt: skip
    run(c, argv)


def update(c: Context, settings: Settings, to: str, *, timeout: float = 900) -> None:
    """Deploy version ``to``: migrations job, then rolling start-first updates; .env gets
    MEDIACMS_VERSION=to only when web ends up on it (else Swarm has rolled web back)."""
    if dry(c):
        return stack_deploy(c, settings, version=to)
    preflight(c, settings, to)
    target = ImageNames(settings.registry, to).ref("web")
    before = update_state(c, settings, "web")
    unchanged = running_image(c, settings, "web").split("@")[0] == target
    stack_deploy(c, settings, version=to)
    state = "completed" if unchanged else wait_update(c, settings, "web", before, timeout)
    if state.startswith("rollback") or state == "paused":
        raise StackError(f"web did not become healthy on {to}: Swarm rolled it back "
                         f"(update {state}); .env still says {settings.version}; see "
                         f"`docker service ps {service(settings, 'web')}`")  # fmt: skip
    wait(c, settings, timeout)
    prune_unused(c, settings)
    config.update(settings, {"MEDIACMS_VERSION": to})  # only now: web runs `to`, not rolled back
    say(f"{settings.project} runs {to}")


def rollback(c: Context, settings: Settings) -> None:
    """Every app service back to its previous specification (Swarm keeps one)."""
    failed = []
    for name in APP_SERVICES:
        result = run(c, ["docker", "service", "rollback", "--detach=false",
                         service(settings, name)], warn=True)  # fmt: skip
        if result is not None and result.exited != 0:
            failed.append(f"{name}: {result.stderr.strip() or 'failed'}")
    if failed:
        raise StackError("not rolled back: " + "; ".join(failed) +
                         " (a service that was never updated has no previous spec)")  # fmt: skip


def status(c: Context, settings: Settings) -> list[tuple[str, str, str, str]]:
    return services(c, settings)


# --- old secrets and configs ------------------------------------------------------------
def _references(kind: str) -> str:
    """Template listing the ``kind`` (secret/config) names a service's spec and previous
    spec use."""
    field_, name = ("Secrets", "SecretName") if kind == "secret" else ("Configs", "ConfigName")
    each = f"{{{{range .TaskTemplate.ContainerSpec.{field_}}}}}{{{{.{name}}}}} {{{{end}}}}"
    return "{{with .Spec}}" + each + "{{end}}{{with .PreviousSpec}}" + each + "{{end}}"


def prune_unused(c: Context, settings: Settings) -> list[str]:
    """Remove the stack's versioned secrets and configs that no service uses any more,
    neither in its spec nor in its previous one (what `swarm.rollback` and Swarm's own
    rollback go back to); returns their names."""
    namespace = f"label=com.docker.stack.namespace={settings.project}"
    names = _query(c, ["docker", "service", "ls", "--filter", namespace,
                       "--format", "{{.Name}}"]).split()  # fmt: skip
    removed = []
    for kind in ("secret", "config"):
        ours = _query(c, ["docker", kind, "ls", "--filter", namespace,
                          "--format", "{{.Name}}"]).split()  # fmt: skip
        if not ours:
            continue
        used = set(_query(c, ["docker", "service", "inspect", "--format", _references(kind),
                              *names]).split()) if names else set()  # fmt: skip
        unused = [name for name in ours if name not in used]
        if unused:
            run(c, ["docker", kind, "rm", *unused])
            removed += unused
    if removed:
        say(f"removed {len(removed)} secret(s)/config(s) no service uses any more")
    return removed
