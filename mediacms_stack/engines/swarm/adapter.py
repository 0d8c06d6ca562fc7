"""The Swarm stack as a :class:`Compose`: the backup, restore and manage code, written for
compose, acts on the deployed stack through the engine DOCKER_HOST reaches."""

from __future__ import annotations

from dataclasses import dataclass, field

from invoke.context import Context

from ...stack.config import Settings
from ...stack.errors import StackError
from ...stack.model import MEDIA_DIR, ImageNames, volume_name
from ..compose import Compose
from ..shell import dry, run
from .operations import scale
from .poll import converged, wait
from .query import _engine_role, _query, running_tasks, services
from .stack import MEDIA_KEYS, STACK_FILE, label, service

#: Services whose tasks write the database or the media: a restore scales them to 0.
WRITERS = ("web", "celery_short", "celery_long", "celery_beat")


def _words(args: tuple[str, ...], flags: frozenset[str], valued: frozenset[str]):
    """A compose ``exec``/``run`` tail -> (flags seen, {option: value}, service, command)."""
    seen, options, rest = set(), {}, list(args)
    while rest and rest[0].startswith("-"):
        word = rest.pop(0)
        if word in valued:
            options[word] = rest.pop(0)
        elif word in flags:
            seen.add(word)
        else:
            raise StackError(f"{word} has no Swarm equivalent here")
    if not rest:
        raise StackError("no service named")
    return seen, options, rest[0], rest[1:]


@dataclass(frozen=True)
class SwarmStack(Compose):
    """The stack deployed on Swarm, driven by the code that drives compose stacks
    (:mod:`backup`, :mod:`restore`, :mod:`database`, ``manage``): the few compose
    commands it uses are carried out on the engine DOCKER_HOST reaches.

    * ``exec SERVICE ...``: ``docker exec`` into a running task of SERVICE on that
      engine; when none runs there, one error naming the node where it runs (``docker
      exec`` reaches only its own engine's containers).
    * ``run --rm --entrypoint PROGRAM web ...``: a throwaway container of the web image
      with the media volume, defined as the stack defines it (shared storage, so any node
      sees the same files).
    * ``stop`` / ``up`` of the app services: the writers (web, workers, beat) scaled to 0,
      then back to the counts they had, and every service healthy again; nginx (global,
      read-only on the media) keeps answering.
    """

    #: Labels of the stack's task containers: the stack, the service.
    LABELS = ("com.docker.stack.namespace", "com.docker.swarm.service.name")

    def service_of(self, label: str) -> str:
        return label.removeprefix(f"{self.project}_")  # Swarm names it <stack>_<service>

    settings: Settings = field(default=None, compare=False)  # type: ignore[assignment]
    context: Context = field(default=None, compare=False)  # type: ignore[assignment]
    containers: dict = field(default_factory=dict, compare=False)
    stopped: dict = field(default_factory=dict, compare=False)

    @classmethod
    def connect(cls, c: Context, settings: Settings) -> SwarmStack:
        return cls(settings.root, (STACK_FILE,), settings.project, settings.env_file,
                   settings=settings, context=c)  # fmt: skip

    def argv(self, *args: str) -> list[str]:
        verb, tail = args[0], args[1:]
        if verb == "exec":
            flags, options, name, command = _words(tail, frozenset({"-T"}),
                                                   frozenset({"--user"}))  # fmt: skip
            mode = "-i" if "-T" in flags else "-it"
            user = ["--user", options["--user"]] if "--user" in options else []
            return ["docker", "exec", mode, *user, self.container(name), *command]
        if verb == "run":
            _, options, name, command = _words(tail, frozenset({"--rm", "--no-deps", "-T"}),
                                               frozenset({"--entrypoint"}))  # fmt: skip
            if name != "web":
                raise StackError(f"no throwaway {name} container on Swarm")
            entry = ["--entrypoint", options["--entrypoint"]] if "--entrypoint" in options else []
            return ["docker", "run", "--rm", "-i", "--network", "none", "--read-only",
                    "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
                    "--volume", f"{self.media_volume()}:{MEDIA_DIR}",
                    *entry, ImageNames(self.settings.registry, self.settings.version).ref("web"),
                    *command]  # fmt: skip
        raise StackError(f"`docker compose {verb}` does not apply to the Swarm stack; "
                         "use the swarm.* tasks")  # fmt: skip

    def run(self, c: Context, *args: str, **kwargs):
        if args[0] == "stop":
            return self.stop_writers(c, args[1:])
        return super().run(c, *args, **kwargs)

    def up(self, c: Context, *services: str, **kwargs):
        """Scale back what :meth:`stop_writers` stopped of ``services`` (of all of them when
        none is named, as with compose); wait until every service is healthy."""
        back = {name: count for name, count in self.stopped.items()
                if not services or name in services}  # fmt: skip
        if back:
            scale(c, self.settings, back)
            for name in back:
                del self.stopped[name]
        if kwargs.get("wait", True) and not dry(c):
            wait(c, self.settings, kwargs.get("timeout", 600))

    def ps(self, c: Context, *, all_: bool = True) -> list[dict]:
        """The stack's services as compose reports containers (what ``status`` reads), one
        row a service: running and healthy when as many tasks run as it wants (Swarm counts
        a task running once its health check passed), else its ``running of wanted`` tasks,
        not healthy; a job (the migrations) completed or not. Only a manager knows them:
        on a worker, one error saying so."""
        here = _engine_role(c)
        if not here.strip().endswith(" true"):
            raise StackError(f"{here.split(' ')[0] or 'this engine'} is not a swarm manager, "
                             "which alone knows the services: run this where DOCKER_HOST "
                             "reaches a manager")  # fmt: skip
        rows, running = services(c, self.settings), running_tasks(c, self.settings)
        found = []
        for name, mode, replicas, image in rows:
            ready = converged(replicas, running[name])
            if mode.endswith("job"):  # the migrations: done, or not (yet)
                state, health = ("completed" if ready else replicas), "-"
            elif ready:
                state, health = "running", "healthy"
            else:
                state, health = f"{running[name]} of {replicas}", "not healthy"
            found.append({"Service": self.service_of(name), "Image": image, "State": state,
                          "Health": health})  # fmt: skip
        return found

    def check_can_stop(self, c: Context) -> None:
        here = _engine_role(c)
        if not dry(c) and not here.strip().endswith(" true"):
            raise StackError(f"{here.split(' ')[0] or 'this engine'} is not a swarm manager: "
                             "stopping web, the workers and beat (docker service scale) needs "
                             "one; run this where DOCKER_HOST reaches a manager that runs the "
                             "db task; nothing was changed")  # fmt: skip

    def stop_writers(self, c: Context, services: tuple[str, ...]) -> None:
        names = [name for name in services if name in WRITERS]
        self.check_can_stop(c)
        for name in names:
            out = _query(c, ["docker", "service", "inspect", service(self.settings, name),
                             "--format", "{{.Spec.Mode.Replicated.Replicas}}"])  # fmt: skip
            count = out.strip()
            self.stopped[name] = int(count) if count.isdigit() else 1
        scale(c, self.settings, dict.fromkeys(names, 0))

    def container(self, name: str) -> str:
        """A running task container of service ``name`` on the reached engine."""
        if dry(self.context):
            return f"<{service(self.settings, name)} task on this engine>"
        if name not in self.containers:
            label_ = f"label=com.docker.swarm.service.name={service(self.settings, name)}"
            found = _query(self.context, ["docker", "ps", "--filter", label_, "--filter",
                                          "status=running", "--format", "{{.ID}}"]).split()  # fmt: skip
            if not found:
                raise StackError(self.elsewhere(name))
            self.containers[name] = found[0]
        return self.containers[name]

    def elsewhere(self, name: str) -> str:
        """Why ``name`` cannot be reached from here, and which DOCKER_HOST can."""
        c = self.context
        here = _engine_role(c)
        node, _, manager = here.strip().partition(" ")
        nodes = []
        if manager == "true":
            nodes = _query(c, ["docker", "service", "ps", service(self.settings, name), "--filter",
                               "desired-state=running", "--format", "{{.Node}}"],
                           may_fail=True).split()  # fmt: skip
        if nodes:
            there = sorted(set(nodes))[0]
            where = f"it runs on {', '.join(sorted(set(nodes)))}"
        elif name in ("db", "redis"):
            there = f"<the node labelled {label(self.settings)}=true>"
            where = f"it runs on the node labelled {label(self.settings)}=true"
        else:
            there, where = "<a node running it>", "no node runs it now"
        return (f"no running {name} task on {node or 'this engine'}, the engine DOCKER_HOST "
                f"reaches ({where}; `docker exec` reaches only its own engine's containers): "
                f"run this again with DOCKER_HOST=ssh://{there}; nothing was changed")  # fmt: skip

    def media_volume(self) -> str:
        """The stack's media volume on this engine, created as the stack file defines it
        (MEDIA_VOLUME_*) when no task ran here yet."""
        name = volume_name(self.settings.project)
        inspect = ["docker", "volume", "inspect", "--format", "{{.Name}}", name]
        if dry(self.context) or _query(self.context, inspect, may_fail=True).strip():
            return name
        kind, options, device = (self.settings.get(key) for key in MEDIA_KEYS)
        run(self.context, ["docker", "volume", "create", "--driver", "local", "--opt",
                           f"type={kind}", "--opt", f"o={options}", "--opt", f"device={device}",
                           "--label", f"com.docker.stack.namespace={self.settings.project}",
                           name], hide="out")  # fmt: skip
        return name
