"""Day-to-day operations on a running stack, built on :mod:`mediacms_stack.engines.compose`."""

from __future__ import annotations

import io
import json
import secrets
import shlex

from invoke.context import Context

from ..engines.compose import Compose
from ..engines.shell import dry, run, say, wait_until
from ..stack.config import Settings
from ..stack.errors import StackError
from ..stack.model import PRODUCTION_TARGETS, SERVICES, ImageNames, parse_scale


def split_command(command: str) -> list[str]:
    """A command line as a shell splits it (quotes group words and are removed)."""
    try:
        return shlex.split(command)
    except ValueError as error:
        raise StackError(f"cannot split {command!r} like a shell would: {error}") from None


def welcome(settings: Settings) -> str:
    """What `invoke up` ends with: where MediaCMS answers and how to log in."""
    user = settings.get("ADMIN_USER", "admin")
    password = (
        f"ADMIN_PASSWORD in {settings.env_file}"
        if settings.get("ADMIN_PASSWORD")
        else "generated at the first start and printed once by `invoke logs --service migrations`"
    )
    return "\n".join((
        f"MediaCMS is up: {settings.get('FRONTEND_HOST', 'http://localhost')}",
        f"admin user: {user}; password: {password}",
        f"set a new one: invoke set-admin-password --user {user} --password-stdin",
    ))  # fmt: skip


def status_rows(c: Context, compose: Compose) -> list[tuple[str, str, str, str, str]]:
    """(service, state, health, image, version) for every container of the stack."""
    rows = []
    for item in compose.ps(c):
        image = item.get("Image", "")
        version = image.rsplit(":", 1)[-1] if ":" in image else "latest"
        rows.append((item.get("Service", "?"), item.get("State", "?"),
                     item.get("Health", "") or "-", image, version))  # fmt: skip
    return sorted(rows)


def format_table(rows: list[tuple[str, ...]], header: tuple[str, ...] = ()) -> str:
    """Columns padded to their widest cell; the project's one table printer."""
    data = [header, *rows] if header else rows
    if not data:
        return ""
    widths = [max(len(str(r[i])) for r in data) for i in range(len(data[0]))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                     for r in data)  # fmt: skip


def format_age(seconds: float | None) -> str:
    """A duration as an operator reads it: ``45s``, ``12m``, ``3h 05m``, ``2d 04h``."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m" if minutes else f"{seconds}s"


def wait_healthy(
    c: Context, compose: Compose, services: tuple[str, ...] = SERVICES, timeout: int = 300
) -> None:
    """Wait until every container of ``services`` is running and healthy."""
    last: list = []

    def healthy() -> bool:
        rows = [r for r in status_rows(c, compose) if r[0] in services]
        last[:] = [r[:3] for r in rows if r[1:3] != ("running", "healthy")]
        last.extend(sorted(set(services) - {r[0] for r in rows}))
        return not last

    try:
        wait_until(healthy, timeout=timeout, interval=2, what="every service healthy")
    except StackError as error:
        raise StackError(f"{error}; not yet: {last}") from None


def restart(
    c: Context, compose: Compose, settings: Settings, services: list[str], *, timeout: int = 300
) -> None:
    """Restart ``services`` (all when empty, at once, as compose does). web named on its
    own terms: after the others, one container at a time (:func:`restart_web`); and
    behind the HTTPS overlay nginx too, last: a new container beside the old one, which
    ends the responses under way (:func:`replace_beside`)."""
    beside = ["nginx"] if compose.https and "nginx" in services else []
    others = [s for s in services if s not in ("web", *beside)]
    if others or not services:
        compose.run(c, "restart", *others)
    if "web" in services:
        replicas = parse_scale([f"web={settings.get('WEB_REPLICAS') or 1}"])["web"]
        restart_web(c, compose, replicas, timeout=timeout)
    if beside:
        replace_beside(c, compose, *beside, timeout=timeout)


def restart_web(c: Context, compose: Compose, replicas: int, *, timeout: int = 300) -> None:
    """Restart every web container without failing a request: one at a time, each
    stopping gracefully while the others answer (nginx passes them what it refuses). A
    lone web container gets a spare beside it while it restarts; the spare goes after.

    A dry run asks the engine nothing: it plans for ``replicas`` containers (.env's
    WEB_REPLICAS) under compose's names.
    """
    prefix = f"{compose.project}-web-"
    if dry(c):
        running = [f"{prefix}{n}" for n in range(1, replicas + 1)]
    else:
        running = compose.running(c, "web")
    if not running:
        raise StackError("no web container runs: `invoke up` starts the stack; nothing was changed")
    spare = None
    if len(running) == 1:
        say(f"{running[0]} is the only web container: a spare answers meanwhile")
        compose.scale(c, {"web": 2}, deps=False, timeout=timeout)
        if dry(c):
            spare = f"{prefix}{int(running[0].rsplit('-', 1)[1]) + 1}"
        else:
            (spare,) = set(compose.running(c, "web")) - set(running)
    for name in running:
        say(f"{name}: ends the requests it serves, restarts, then must be healthy")
        compose.restart_container(c, name)
        if dry(c):
            continue
        try:
            wait_healthy(c, compose, ("web",), timeout)
        except StackError as error:
            kept = f"; the spare {spare} keeps answering" if spare else ""
            raise StackError(f"{name} restarted but {error}{kept}") from None
    if spare is not None:
        say(f"{spare}: the spare ends the requests it serves and is removed")
        compose.remove_container(c, spare)
    if not dry(c):
        say(f"web restarted, {len(running)} container(s), one at a time")


#: What moves to new images beside the old containers, group by group (web's requests,
#: then the workers' tasks keep being served; one group at a time, so the host holds
#: twice one group, not twice the stack); beat never runs twice, so it is replaced
#: stop-first.
BESIDE = (("web",), ("celery_short", "celery_long"))


#: How an old container ends the work under way when it goes, where SIGTERM would cut it
#: (nginx: SIGTERM is its fast shutdown; SIGQUIT closes its listeners and ends the
#: responses it is sending). The others stop as compose stops them.
GRACEFUL = {"nginx": "QUIT"}


def replace_beside(c: Context, compose: Compose, *services: str, timeout: int = 300) -> None:
    """Move ``services`` onto the images .env names without a gap: as many new containers
    as run start beside the old ones, and once every one is healthy the old ones go, each
    stopped gracefully, within its stop_grace_period. web's old containers end the
    requests they serve while nginx sends new ones to both; a worker's warm shutdown ends
    the tasks it runs while the new workers already take the next ones; an old nginx
    (behind the HTTPS overlay only: on plain HTTP it owns the published port, which no
    second container can share) ends its responses while the new one takes the
    connections from the ports the overlay's listeners service holds for both."""
    old = {name: [] if dry(c) else compose.running(c, name) for name in services}
    counts = {name: 2 * max(len(running), 1) for name, running in old.items()}
    say(f"{', '.join(services)}: new containers beside the running ones, then the old go")
    compose.scale(c, counts, deps=False, timeout=timeout)
    if dry(c):
        return
    wait_healthy(c, compose, services, timeout)
    for service, running in old.items():
        for name in running:
            if service in GRACEFUL:
                compose.drain_container(c, name, GRACEFUL[service])
            else:
                compose.remove_container(c, name)


#: Reads {"user": ..., "password": ...} from stdin: the password is never in an argv
#: (``ps``, /proc/*/cmdline) nor in the printed command.
CHANGE_LOGIN_CODE = (
    "import json, sys; from users.models import User; wanted = json.load(sys.stdin);"
    " u = User.objects.get(username=wanted['user']); u.set_password(wanted['password']);"
    " u.save(); print('password set for', u.username)"
)


def set_admin_password(c: Context, compose: Compose, user: str, password: str | None) -> str:
    """Set (or generate) a user's password through Django; returns the password."""
    password = password or secrets.token_urlsafe(18)
    wanted = io.StringIO(json.dumps({"user": user, "password": password}))
    compose.manage(c, "shell", "-c", CHANGE_LOGIN_CODE, in_stream=wanted)
    return password


def missing_images(refs: list[str]) -> list[str]:
    """The references the engine does not have; StackError when no engine answers."""
    from ..engines import engine

    problem = engine.engine_problem()
    if problem is not None:
        raise StackError(f"{problem}; `invoke engine` provides one")
    return [ref for ref in refs if engine.image(ref) is None]


def enable_metrics(c: Context, settings: Settings) -> Settings:
    """Before `up --metrics`: the overlay's image (bootstrap/metrics on BASE_IMAGE, built
    when missing) and METRICS_OVERLAY=true recorded in .env with METRICS_IMAGE, which
    docker-compose-metrics.yaml reads; every later task includes the overlay."""
    from ..images import bootstrap
    from ..stack import config

    base = settings.get("BASE_IMAGE", "debian:trixie-slim")
    image = bootstrap.tool_image(c, config.ROOT, "metrics", base=base)
    changes = {"METRICS_OVERLAY": "true", "METRICS_IMAGE": image}
    if all(settings.get(key) == value for key, value in changes.items()):
        return settings
    say(f"METRICS_OVERLAY=true and METRICS_IMAGE={image} in {settings.env_file}: every "
        "task includes the metrics overlay from now on")  # fmt: skip
    return config.update(settings, changes, dry_run=dry(c))


def enable_https(c: Context, settings: Settings) -> Settings:
    """Before `up --https`: the overlay's image (bootstrap/front on BASE_IMAGE, built when
    missing) recorded in .env as FRONT_IMAGE, which docker-compose-cert.yaml reads. Its
    tag changes only with bootstrap/front, never with a release of MediaCMS, so the
    listeners service (the published ports) is not recreated by an upgrade."""
    from ..images import bootstrap
    from ..stack import config

    base = settings.get("BASE_IMAGE", "debian:trixie-slim")
    image = bootstrap.tool_image(c, config.ROOT, "front", base=base)
    remove_previous_front(c, settings)
    if settings.get("FRONT_IMAGE") == image:
        return settings
    say(f"FRONT_IMAGE={image} in {settings.env_file}")
    return config.update(settings, {"FRONT_IMAGE": image}, dry_run=dry(c))


#: The HTTPS overlay's service of before (Caddy in front of nginx), which published the
#: ports its `listeners` service publishes now.
PREVIOUS_FRONT = "caddy"


def remove_previous_front(c: Context, settings: Settings) -> None:
    """Remove this project's `caddy` container of the overlay before, if one is left:
    it holds ports 80 and 443, and compose leaves a service its files no longer name."""
    from ..engines import engine

    if dry(c) or not engine.engine_answers():
        return
    labels = [f"com.docker.compose.project={settings.project}",
              f"com.docker.compose.service={PREVIOUS_FRONT}"]  # fmt: skip
    with engine.client() as handle:
        found = [box.name for box in handle.containers.list(all=True, filters={"label": labels})]
    if found:
        say(f"{', '.join(found)}: the previous HTTPS front (Caddy in front of nginx) goes; "
            "its caddy_data and caddy_config volumes are kept until you remove them")  # fmt: skip
        run(c, ["docker", "rm", "--force", *found])


def bootstrap_stand_ins(c: Context, refs: list[str]) -> None:
    """Make the local stand-ins (``mediacms-local/...``) when ``refs`` name one the engine
    lacks: the bootstrap makes them all, from Debian's archive."""
    from ..images import bootstrap
    from ..stack.config import ROOT

    if any(ref.startswith("mediacms-local/") for ref in missing_images(refs)):
        say("local stand-in images missing: bootstrapping them from Debian's archive")
        if not dry(c):
            bootstrap.all_images(c, ROOT)


def ensure_images(c: Context, settings: Settings) -> None:
    """Before `up`: bootstrap local stand-ins and build our images when they are missing.

    Third-party images named ``mediacms-local/...`` are made by the bootstrap; our own
    images are built from MEDIACMS_SOURCE when set, otherwise compose pulls them.
    """
    from ..images import bootstrap, mediacms

    local = [settings.get(k) for k in bootstrap.LOCAL_IMAGES if k != "NODE_IMAGE"]
    if dry(c):
        try:
            missing_images(local)
        except StackError as error:
            print(f"(dry run) {error}: `invoke up` would provide the engine first, then "
                  "bootstrap or build the images that are missing")  # fmt: skip
            return
    bootstrap_stand_ins(c, local)
    names = ImageNames.from_settings(settings)
    ours = [names.ref(t) for t in PRODUCTION_TARGETS]
    if missing_images(ours) and settings.get("MEDIACMS_SOURCE"):
        say(f"building missing images from {settings.get('MEDIACMS_SOURCE')}")
        mediacms.build(
            c,
            settings,
            PRODUCTION_TARGETS,
            source=settings.get("MEDIACMS_SOURCE"),
            ca_bundle=settings.get("BUILD_CA_BUNDLE"),
        )
