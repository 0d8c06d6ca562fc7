"""The development stack (docker-compose-dev.yaml): start it, build the frontend, run tests.

The developer's MediaCMS checkout (``MEDIACMS_TREE``) is mounted into every container,
and every container runs as the checkout's owner, so what they write (``logs/``,
``media_files/``, ``frontend/node_modules``, ``frontend/dist``, ``static/``) lands in
that checkout owned by the developer.
Production never sees it until the images are rebuilt from it: static files are baked
into the web and nginx images (``invoke build`` + ``invoke up``).
"""

from __future__ import annotations

import ipaddress
import shlex
from pathlib import Path

from invoke.context import Context

from ..engines.compose import Compose
from ..engines.shell import dry, say
from ..stack.config import Settings
from ..stack.errors import StackError
from ..stack.model import ImageNames

#: Long-running services of the dev compose (migrations is a one-shot job).
WEB_PORT = "8000"
FRONTEND_PORT = "8088"
#: The frontend build as upstream's Makefile runs it; frontend/.env is read by the
#: frontend's own build script.
#: npm ci installs exactly the tree's package-lock.json; a tree without one (8.3.2's
#: frontend/ has none) can only be resolved, by npm install.
NPM_INSTALL = (
    "if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; "
    "else npm install --no-audit --no-fund; fi"
)
FRONTEND_BUILD = f"{NPM_INSTALL} && npm run dist && cp -R dist/static/. ../static/"


def tree(settings: Settings) -> Path:
    """The checkout named by MEDIACMS_TREE, resolved like compose resolves the bind mount."""
    value = settings.require("MEDIACMS_TREE")
    path = (settings.root / value).resolve()
    if not (path / "manage.py").is_file():
        raise StackError(f"MEDIACMS_TREE={value}: {path} is not a MediaCMS checkout (no manage.py)")
    return path


def owner_env(settings: Settings, checkout: Path) -> dict[str, str]:
    """DEV_UID/DEV_GID the dev containers run as: .env's values, else the tree's owner."""
    info = checkout.stat()
    return {
        "DEV_UID": settings.get("DEV_UID", str(info.st_uid)),
        "DEV_GID": settings.get("DEV_GID", str(info.st_gid)),
    }


def ensure_images(
    c: Context,
    settings: Settings,
    checkout: Path,
    *,
    rebuild: bool = False,
    dev_image: bool = True,
) -> None:
    """Bootstrap missing local stand-ins; build the dev image from the checkout if missing."""
    from ..images import mediacms
    from .ops import bootstrap_stand_ins, missing_images

    keys = ("POSTGRES_IMAGE", "REDIS_IMAGE", "NODE_IMAGE")
    third_party = [settings.get(k) for k in keys if settings.get(k)]
    bootstrap_stand_ins(c, third_party)
    ref = ImageNames.from_settings(settings).ref("dev")
    if rebuild or (dev_image and missing_images([ref])):
        say(f"building {ref} from {checkout}")
        mediacms.build(c, settings, ["dev"], source=str(checkout),
                     ca_bundle=settings.get("BUILD_CA_BUNDLE"))  # fmt: skip


def up(
    c: Context,
    settings: Settings,
    compose: Compose,
    *,
    build: bool = False,
    timeout: int = 900,
) -> dict[str, str]:
    """Start the dev stack, wait until every service is healthy, print and return the URLs."""
    checkout = tree(settings)
    ensure_images(c, settings, checkout, rebuild=build)
    compose.up(c, timeout=timeout, env=owner_env(settings, checkout))
    found = urls(c, compose)
    say(f"{checkout} mounted; stop with `invoke down --dev`")
    for name, url in found.items():
        say(f"{name:<10} {url}")
    say("the frontend dev server answers once its bundle is compiled (minutes at first)")
    return found


def urls(c: Context, compose: Compose) -> dict[str, str]:
    """Where runserver and the frontend dev server are published (``compose port``)."""
    found = {}
    for name, service, port in (("runserver", "web", WEB_PORT),
                                ("frontend", "frontend", FRONTEND_PORT)):  # fmt: skip
        address = compose.query(c, "port", service, port).strip() if not dry(c) else ""
        host, _, published = address.rpartition(":")
        if not published:
            found[name] = f"http://127.0.0.1:<{service} {port}>/"
            continue
        if not host or ipaddress.ip_address(host.strip("[]")).is_unspecified:
            host = "127.0.0.1"  # published on every interface: loopback is one of them
        found[name] = f"http://{host}:{published}/"
    return found


def _running(c: Context, compose: Compose, service: str) -> bool:
    return any(
        item.get("Service") == service and item.get("State") == "running"
        for item in compose.ps(c, all_=False)
    )


def build_frontend(c: Context, settings: Settings, compose: Compose) -> None:
    """``npm run dist`` in the frontend service, dist/static copied over the tree's static/.

    Works whether the dev stack runs or not (a one-off container); a running dev web is
    restarted and waited for. Production serves the result after ``invoke build`` (with
    MEDIACMS_SOURCE = this checkout) and ``invoke up``.
    """
    checkout = tree(settings)
    env = owner_env(settings, checkout)
    ensure_images(c, settings, checkout, dev_image=False)
    compose.run(c, "run", "--rm", "--no-deps", "-T", "frontend", "sh", "-c", FRONTEND_BUILD,
                env=env)  # fmt: skip
    running = dry(c) or _running(c, compose, "web")
    if running:
        compose.run(c, "restart", "web", env=env)
        if not dry(c):
            from .ops import wait_healthy

            wait_healthy(c, compose, ("web",), timeout=120)
    served = "the dev runserver serves it now" if running else "`invoke dev` serves it"
    say(f"{checkout / 'static'} updated; {served}")
    source = settings.get("MEDIACMS_SOURCE")
    same = bool(source) and (settings.root / source).resolve() == checkout
    if same:
        say("production serves it after `invoke build` and `invoke up`")
    else:
        say(f"production images are built from MEDIACMS_SOURCE={source or '?'}; "
            f"to ship this frontend: `invoke build --source {checkout}` and `invoke up`")  # fmt: skip


def test(
    c: Context, settings: Settings, compose: Compose, args: str = "", *, tty: bool = False
) -> None:
    """pytest in a one-off dev container with TESTING=True, against the dev db and redis.

    Only db and redis are started (pytest-django makes its own test database), so the
    tests run whether or not the dev stack is up, and the exit status is pytest's.
    """
    checkout = tree(settings)
    env = owner_env(settings, checkout)
    ensure_images(c, settings, checkout)
    compose.up(c, "db", "redis", env=env)
    compose.run(c, "run", "--rm", "--no-deps", *([] if tty else ["-T"]), "-e", "TESTING=True",
                "web", "pytest", *shlex.split(args), env=env, pty=tty)  # fmt: skip
