"""docker-compose.yaml (one host) and docker-stack.yaml (Swarm) protect each service alike.

The two files are written side by side, not generated one from the other (README,
"Docker Swarm"). Here they are read as plain YAML and compared service by service on
their protections. Each difference found today is listed in DIFFERENCES, exactly (what
only one file has) and with its reason; a real gap is listed too, its reason starting
with "GAP:". So this passes today, and fails on a NEW difference, and on a listed one
that changed or is gone (then the table is out of date: mend the row).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import contextmanager

import pytest
from invoke import MockContext

try:
    import yaml
except ModuleNotFoundError:  # PyYAML is no dependency of ours; invoke carries it
    from invoke.util import yaml

from mediacms_stack.engines import swarm
from mediacms_stack.engines.compose import PRODUCTION
from mediacms_stack.engines.swarm import STACK_FILE
from mediacms_stack.stack import config, model


def load(name: str) -> dict:
    return yaml.safe_load((config.ROOT / name).read_text())


# --- each protection of a service as a set of words, comparable across the two files ----
def _bytes(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([bkmg]?)", text.strip().lower()).groups()
    return int(number) * 1024 ** "bkmg".index(unit or "b")


def size(value: object) -> str:
    """``${VAR:-64m}`` -> ``VAR=67108864`` (the .env key and its default); ``256m`` and
    ``268435456`` -> ``268435456``."""
    text = str(value)
    variable = re.fullmatch(r"\$\{(\w+):?-([^}]*)\}", text)
    return f"{variable[1]}={_bytes(variable[2])}" if variable else str(_bytes(text))


def _limits(service: dict) -> dict:
    return ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}


def _words(value: object) -> set[str]:
    if value is None:
        return set()
    return {str(v) for v in value} if isinstance(value, list) else {str(value)}


def _environment(service: dict) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {k: v for k, _, v in (item.partition("=") for item in env)}
    return {k: None if v is None else str(v) for k, v in env.items()}


def tmpfs(service: dict) -> set[str]:
    """Mount point and size of every RAM-backed folder (compose's shm_size is /dev/shm)."""
    found = set()
    for entry in _words(service.get("tmpfs")):
        target, _, options = entry.partition(":")
        sizes = [o.removeprefix("size=") for o in options.split(",") if o.startswith("size=")]
        found.add(f"{target} {size(sizes[0]) if sizes else 'unbounded'}")
    if service.get("shm_size"):
        found.add(f"/dev/shm {size(service['shm_size'])}")
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict) and volume.get("type") == "tmpfs":
            bound = (volume.get("tmpfs") or {}).get("size")
            found.add(f"{volume['target']} {size(bound) if bound else 'unbounded'}")
    return found


def healthcheck(service: dict) -> set[str]:
    test = (service.get("healthcheck") or {}).get("test")
    return {" ".join(test) if isinstance(test, list) else str(test)} if test else set()


def ulimits(service: dict) -> set[str]:
    return {f"{k}={v}" for k, v in (service.get("ulimits") or {}).items()}


def pids(service: dict) -> set[str]:
    return _words(service.get("pids_limit") or _limits(service).get("pids"))


def memory(service: dict) -> set[str]:
    limit = service.get("mem_limit") or _limits(service).get("memory")
    return {size(limit)} if limit else set()


_SECRET = re.compile(r"PASSWORD|SECRET|KEY")


def plain_secrets(service: dict) -> set[str]:
    """Environment keys that hold a secret themselves: a secret's name (not X_FILE, which
    names a file under /run/secrets), or a value made from a secret's .env key."""
    found = set()
    for key, value in _environment(service).items():
        named = _SECRET.search(key) and not key.endswith("_FILE")
        made_of = any(_SECRET.search(v) for v in re.findall(r"\$\{(\w+)", value or ""))
        if named or made_of:
            found.add(key)
    return found


def environment(service: dict) -> set[str]:
    """The names of the environment (X_FILE read as X: the settings bridge reads it so)."""
    return {key.removesuffix("_FILE") for key in _environment(service)}


def _aliases(service: dict) -> dict[str, set[str]]:
    joined = service.get("networks") or []
    if isinstance(joined, list):
        return {name: set() for name in joined}
    return {n: set((o or {}).get("aliases", [])) for n, o in joined.items()}


def networks(service: dict) -> set[str]:
    aliases = _aliases(service)
    return set(aliases) | {f"{n} alias {a}" for n, named in aliases.items() for a in named}


def listens_on(service: dict) -> set[str]:
    """The networks uWSGI listens on, and on no other: where WEB_LISTEN_NAME is an alias
    (compose), or whose subnet is WEB_LISTEN_SUBNET (Swarm)."""
    env = _environment(service)
    name, subnet = env.get("WEB_LISTEN_NAME") or "", env.get("WEB_LISTEN_SUBNET") or ""
    if subnet:
        return {n for n in _aliases(service) if subnet in _subnets(STACK_YAML["networks"][n])}
    return {n for n, named in _aliases(service).items() if name in named} if name else set()


def _subnets(network: dict | None) -> list[str]:
    return [c.get("subnet") for c in ((network or {}).get("ipam") or {}).get("config") or []]


def roles(service: dict) -> set[str]:
    """The database roles a service is given, as the .env key each comes from
    (``${POSTGRES_SUPERUSER:-${POSTGRES_USER...}}`` and ``${POSTGRES_SUPERUSER:?...}`` are
    both POSTGRES_SUPERUSER: swarm.deploy sets it to the same value)."""
    env = _environment(service)
    first = {key: re.match(r"\$\{(\w+)", env.get(key) or "") for key in ROLE_KEYS}
    return {f"{key}={found[1]}" for key, found in first.items() if found}


ROLE_KEYS = ("POSTGRES_USER", "MEDIACMS_DB_USER")


def configs(service: dict) -> set[str]:
    return {f"{c['source']} at {c['target']}" for c in service.get("configs") or []}


ASPECTS: dict[str, Callable[[dict], set[str]]] = {
    "user": lambda s: _words(s.get("user")),
    "read_only": lambda s: {"read_only"} if s.get("read_only") else set(),
    "cap_drop": lambda s: _words(s.get("cap_drop")),
    "cap_add": lambda s: _words(s.get("cap_add")),
    "security_opt": lambda s: _words(s.get("security_opt")),
    "tmpfs": tmpfs,
    "healthcheck": healthcheck,
    "ulimits": ulimits,
    "pids": pids,
    "memory": memory,
    #: held against none at all, in each file (not against the other file)
    "plain secrets": plain_secrets,
    "environment": environment,
    "networks": networks,
    "uwsgi listens on": listens_on,
    "database roles": roles,
    "configs": configs,
    #: how long requests or tasks in flight get to end when a container stops
    "stop_grace_period": lambda s: _words(s.get("stop_grace_period")),
}

# --- the differences of today: (only in docker-compose.yaml, only in docker-stack.yaml) ---
NNP = "no-new-privileges:true"

#: Why the files differ where they do, by what differs.
WHY = {
    "security_opt": "docker stack deploy ignores security_opt (moby/moby#41371): on Swarm "
    "no-new-privileges comes only from each node's daemon.json",
    "tmpfs": "the stack file's /tmp holds the default 64 MiB: `docker stack deploy` takes only "
    "bytes there, and TMPFS_SIZE reaches it through the deploy's overlay "
    "(swarm.inputs.tmpfs_overlay, tested in test_swarm.py)",
    "listen": "uWSGI finds its address on app by an alias of that network on compose, by the "
    "network's subnet on Swarm (whose DNS names a task only once it is healthy)",
    "drain": "compose's old nginx drains beside its replacement (HTTPS overlay: its listeners "
    "hold the ports); Swarm's keeps the default 10 s, as in host mode its update is stop-first "
    "and the node's port stays closed while the old task drains",
}
APP = ("migrations", "web", "celery_beat", "celery_short", "celery_long")
TMP = ("/tmp TMPFS_SIZE=67108864", "/tmp 67108864")

DIFFERENCES: dict[tuple[str, str], tuple[set[str], set[str], str]] = {
    **{(name, "security_opt"): ({NNP}, set(), WHY["security_opt"])
       for name in (*APP, "nginx", "db", "redis", "redis_cache")},
    **{(name, "tmpfs"): ({TMP[0]}, {TMP[1]}, WHY["tmpfs"]) for name in (*APP, "nginx")},
    ("web", "environment"): ({"WEB_LISTEN_NAME"}, {"WEB_LISTEN_SUBNET"}, WHY["listen"]),
    ("web", "networks"): ({"app alias uwsgi-app"}, set(), WHY["listen"]),
    ("nginx", "stop_grace_period"): ({"60s"}, set(), WHY["drain"]),
}  # fmt: skip

COMPOSE_YAML, STACK_YAML = load(PRODUCTION), load(STACK_FILE)
COMPOSE, STACK = COMPOSE_YAML["services"], STACK_YAML["services"]


def differences(name: str) -> dict[str, tuple[set[str], set[str]]]:
    """Aspect -> (only in compose, only in the stack file); "plain secrets": each file's own."""
    found = {}
    for aspect, read in ASPECTS.items():
        ours, theirs = read(COMPOSE[name]), read(STACK[name])
        diff = (ours, theirs) if aspect == "plain secrets" else (ours - theirs, theirs - ours)
        if any(diff):
            found[aspect] = diff
    return found


def test_both_files_run_the_services_of_the_model():
    assert set(COMPOSE) == set(STACK) == {*model.SERVICES, "migrations"}
    assert {service for service, _ in DIFFERENCES} <= set(COMPOSE)
    assert {aspect for _, aspect in DIFFERENCES} <= set(ASPECTS)


def _only(aspect: str) -> str:
    return "in" if aspect == "plain secrets" else "only in"


@pytest.mark.parametrize("name", sorted(COMPOSE))
def test_protections_match_but_for_the_listed_differences(name):
    listed = {a: (c, s) for (n, a), (c, s, _) in DIFFERENCES.items() if n == name}
    found = differences(name)
    wrong = [
        f"{name} {aspect}: {_only(aspect)} {PRODUCTION} {sorted(ours)}, {_only(aspect)} "
        f"{STACK_FILE} {sorted(theirs)}; DIFFERENCES says "
        + (f"{sorted(listed[aspect][0])}, {sorted(listed[aspect][1])}" if aspect in listed
           else "nothing: make the files agree, or list it with its reason (GAP: for a gap)")
        for aspect, (ours, theirs) in found.items()
        if listed.get(aspect) != (ours, theirs)
    ]  # fmt: skip
    wrong += [f"{name} {aspect}: listed in DIFFERENCES, but the files agree now: remove the row"
              for aspect in listed if aspect not in found]  # fmt: skip
    assert not wrong, "\n".join(wrong)


def test_both_files_use_the_model_volumes_and_media_dir():
    for declared in (COMPOSE_YAML["volumes"], STACK_YAML["volumes"]):
        assert set(model.DATA_VOLUMES) <= set(declared)
    mount = f"{model.MEDIA_VOLUME}:{model.MEDIA_DIR}"
    for name in {"migrations", *model.APP_SERVICES} - {"nginx"}:
        assert mount in COMPOSE[name]["volumes"] and mount in STACK[name]["volumes"], name


# --- what Swarm needs beyond the services' own keys ------------------------------------
def test_the_swarm_networks_of_the_database_redis_and_web_are_encrypted():
    """Overlay traffic between nodes is plain VXLAN unless the network is encrypted
    (IPsec); compose's networks never leave the host. `data` carries every row and
    password of db and Redis; `app`, nginx to web, every login form and session cookie."""
    carrying = {n for name in ("db", "redis", "nginx") for n in _aliases(STACK[name])}
    carrying -= {"frontend"}  # nginx's published side: what the visitor sent, as they sent it
    assert carrying == {"data", "app"}
    for name in carrying:
        network = STACK_YAML["networks"][name]
        assert network.get("driver") == "overlay", name
        assert (network.get("driver_opts") or {}).get("encrypted") == "true", name


#: .env keys that hold a secret: generated by `invoke init`, or the admin's password.
SECRET_ENV_KEYS = {*config.GENERATED, "ADMIN_PASSWORD"}


def test_no_secret_reaches_a_swarm_service_or_the_deploy_command():
    """The stack file takes no secret from the deploy's environment (only the hash that
    names its secret, X_REV); swarm.deploy leaves every secret out of that environment."""
    text = (config.ROOT / STACK_FILE).read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    assert not used & SECRET_ENV_KEYS, used & SECRET_ENV_KEYS
    assert {f"{key}_REV" for key in ("POSTGRES_PASSWORD", "POSTGRES_SUPERUSER_PASSWORD",
                                     "ADMIN_PASSWORD")} <= used  # fmt: skip
    assert SECRET_ENV_KEYS <= swarm.inputs.SECRET_KEYS


@pytest.mark.parametrize("name", ["deploy", "scale", "update", "rollback"])
def test_the_swarm_tasks_that_change_the_stack_take_its_lock(name, home, monkeypatch):
    import tasks

    held = []

    @contextmanager
    def exclusive(settings, operation, **kwargs):
        held.append(operation)
        yield

    monkeypatch.setattr(tasks.lock, "exclusive", exclusive)
    monkeypatch.setattr(swarm, name, lambda *a, **k: held.append("ran"))
    arguments = {"scale": {"counts": "web=2"}, "update": {"to": "9.9.10"}}.get(name, {})
    getattr(tasks, f"swarm_{name}")(MockContext(), **arguments)
    assert held == [f"swarm.{name}", "ran"]
