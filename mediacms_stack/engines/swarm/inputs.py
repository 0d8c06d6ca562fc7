"""What `docker stack deploy` is given, and the deploy that gives it. It reads no
``.env``: it gets the ``.env`` values as its environment, without the secrets, which
are written as files (mode 600, in a private folder removed afterwards) for Swarm to turn
into secrets named after a hash of their value; custom/'s files and the db's init script
(docker-compose.yaml's ``db-app-role``) travel as configs named after a hash of their
content."""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from invoke.context import Context
from invoke.util import yaml

from ...stack.config import ROOT, Settings
from ...stack.errors import StackError
from ...stack.files import write_private
from ...stack.secrets import SECRET_KEYS
from ...stack.secrets import values as secret_values
from ..compose import PRODUCTION
from ..shell import run
from .stack import STACK_FILE


def db_app_role() -> str:
    """The db's first-start script that makes MediaCMS's plain role: docker-compose.yaml's
    ``db-app-role`` config, the same text on both."""
    return yaml.safe_load((ROOT / PRODUCTION).read_text())["configs"]["db-app-role"]["content"]


def write_secrets(settings: Settings, folder: Path) -> dict[str, str]:
    """Write the secret files and the db's init script (mode 600) and return
    ``<NAME>_REV`` hashes for their names."""
    files = {**secret_values(settings), "db_app_role.sql": db_app_role()}
    revisions = {}
    for name, value in files.items():
        write_private(folder / name, value)
        key = name.removesuffix(".sql").upper()
        revisions[f"{key}_REV"] = hashlib.sha256(value.encode()).hexdigest()[:12]
    return revisions


def deploy_env(settings: Settings, extra: Mapping[str, str]) -> dict[str, str]:
    """.env without its secrets, plus what the stack file computes from: the database
    superuser (POSTGRES_USER on a stack of one role), nginx's update order (with
    host-mode ports the old task holds the port, so stop-first)."""
    env = {k: v for k, v in settings.values.items() if k not in SECRET_KEYS}
    env["COMPOSE_PROJECT_NAME"] = settings.project
    env["POSTGRES_SUPERUSER"] = settings.get("POSTGRES_SUPERUSER") or settings.get(
        "POSTGRES_USER", "mediacms"
    )
    host_mode = settings.get("SWARM_PUBLISH_MODE", "ingress") == "host"
    env["SWARM_NGINX_UPDATE_ORDER"] = "stop-first" if host_mode else "start-first"
    return {**env, **extra}


# --- custom/ as Swarm configs ----------------------------------------------------------
CUSTOM_SETTINGS = "/home/mediacms.io/mediacms/custom/local_settings.py"
CUSTOM_STATIC = "/var/www/custom/static"
#: Services whose settings bridge executes custom/local_settings.py.
SETTINGS_READERS = ("migrations", "web", "celery_short", "celery_long", "celery_beat")
CONFIG_LIMIT = 500 * 1024  # Swarm's size limit of one config


def custom_files(settings: Settings) -> list[tuple[Path, str]]:
    """(file, path in the containers) of what custom/ gives the stack: local_settings.py
    to the app services, every file under static/ (dotfiles aside, as nginx refuses them)
    to nginx. A file Swarm cannot carry is refused before anything changes."""
    custom = settings.root / "custom"
    found = []
    if (custom / "local_settings.py").is_file():
        found.append((custom / "local_settings.py", CUSTOM_SETTINGS))
    static = custom / "static"
    for path in sorted(static.rglob("*")) if static.is_dir() else []:
        relative = path.relative_to(static)
        if any(part.startswith(".") for part in relative.parts) or path.is_dir():
            continue
        if path.is_symlink() or not path.is_file():
            raise StackError(f"{path} is not a plain file: copy the file itself there; "
                             "nothing was deployed")  # fmt: skip
        found.append((path, f"{CUSTOM_STATIC}/{relative.as_posix()}"))
    for path, _ in found:
        if path.stat().st_size > CONFIG_LIMIT:
            raise StackError(f"{path} is larger than a Swarm config can be (500 KB): bake it "
                             "into the nginx image instead; nothing was deployed")  # fmt: skip
    return found


def custom_overlay(settings: Settings, found: list[tuple[Path, str]]) -> dict:
    """A compose file adding custom/'s files as configs named after a hash of their
    content (a changed file is a new config, and the services using it roll)."""
    configs, app, nginx = {}, [], []
    for path, target in found:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        key = f"custom_{digest}"
        configs[key] = {"name": f"{settings.project}_custom_{digest}", "file": str(path)}
        mount = {"source": key, "target": target, "mode": 0o444}
        (app if target == CUSTOM_SETTINGS else nginx).append(mount)
    services = {name: {"configs": app} for name in SETTINGS_READERS if app}
    if nginx:
        services["nginx"] = {"configs": nginx}
    return {"services": services, "configs": configs}


# --- TMPFS_SIZE ------------------------------------------------------------------------
#: docker-compose.yaml's /tmp sized by .env: the services that have it take TMPFS_SIZE.
TMPFS_ENTRY = "/tmp:size=${TMPFS_SIZE:-64m}"  # noqa: S108 - a path in the containers
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def tmpfs_bytes(text: str) -> int:
    """TMPFS_SIZE as compose reads it (bytes, or a number with k, m or g) in bytes."""
    match = re.fullmatch(r"(\d+)([kmg]?)b?", text.strip().lower())
    if match is None or int(match[1]) == 0:
        raise StackError(f"TMPFS_SIZE={text!r} in .env is not a size such as 64m; nothing "
                         "was deployed")  # fmt: skip
    return int(match[1]) * _UNITS[match[2]]


def tmpfs_overlay(settings: Settings) -> dict:
    """A compose file giving TMPFS_SIZE to the /tmp of the services that take it on
    compose. `docker stack deploy` wants a number of bytes there, which interpolation
    cannot give (a substituted value is a string), so the stack file holds the default
    and this overlay, merged by target, replaces it."""
    compose = yaml.safe_load((ROOT / PRODUCTION).read_text())["services"]
    stack = yaml.safe_load((settings.root / STACK_FILE).read_text())["services"]
    takers = [name for name, spec in compose.items()
              if TMPFS_ENTRY in spec.get("tmpfs", []) and name in stack]  # fmt: skip
    size = tmpfs_bytes(settings.get("TMPFS_SIZE") or "64m")
    tmp = {"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": size}}  # noqa: S108
    return {"services": {name: {"volumes": [tmp]} for name in takers}}


def stack_deploy(c: Context, settings: Settings, *, version: str | None = None) -> None:
    """`docker stack deploy` with the secrets as files that exist only meanwhile,
    custom/'s files as configs (see :func:`custom_overlay`) and TMPFS_SIZE (see
    :func:`tmpfs_overlay`)."""
    found = custom_files(settings)
    with tempfile.TemporaryDirectory(prefix="mediacms-secrets-") as folder:
        extra = {"SWARM_SECRETS_DIR": folder, **write_secrets(settings, Path(folder))}
        if version:
            extra["MEDIACMS_VERSION"] = version
        files = ["--compose-file", str(settings.root / STACK_FILE)]
        overlays = {"tmpfs": tmpfs_overlay(settings)}
        if found:
            overlays["custom"] = custom_overlay(settings, found)
        for name, content in overlays.items():
            overlay = Path(folder) / f"{name}.yaml"  # JSON is YAML
            write_private(overlay, json.dumps(content, indent=1))
            files += ["--compose-file", str(overlay)]
        argv = ["docker", "stack", "deploy", *files, "--with-registry-auth", "--prune",
                "--resolve-image", "always", "--detach=true", settings.project]  # fmt: skip
        run(c, argv, env=deploy_env(settings, extra))
