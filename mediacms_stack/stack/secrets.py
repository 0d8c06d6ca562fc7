"""The stack's secrets: their names, the .env keys they come from, their contents, and the
files compose reads them from (docker-compose.yaml's top-level ``secrets``).

On Swarm every secret is a Swarm secret (:mod:`..engines.swarm.inputs`). On compose each
is a file in ``.secrets/`` beside .env, written from it before each compose command: the
folder is its owner's only (700), the files readable by the container users that mount
them (644: compose bind-mounts a file secret as it is, ignoring uid and mode). So
``docker inspect`` of any container of the stack shows no secret at all.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from .config import Settings
from .files import DIR_MODE, private_writer

#: Secret name -> the .env key holding its value (None: derived, see :func:`values`).
SECRETS = {
    "secret_key": "SECRET_KEY",
    "postgres_password": "POSTGRES_PASSWORD",
    "postgres_superuser_password": "POSTGRES_SUPERUSER_PASSWORD",
    "redis_password": "REDIS_PASSWORD",
    "redis_location": None,
    "admin_password": "ADMIN_PASSWORD",
}
#: The optional overlays' secrets (docker-compose-metrics.yaml), derived from SECRET_KEY so
#: that turning an overlay on needs no new .env key: name -> what it is for.
OVERLAY_SECRETS = {"metrics_db_password": "the metrics overlay's read-only database role"}
#: .env keys that are secrets.
SECRET_KEYS = frozenset(key for key in SECRETS.values() if key)
#: What every deployment's .env has (`invoke init` writes them).
REQUIRED = ("SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD")
#: Where they are written, in the deployment folder (compose's project directory).
FOLDER = ".secrets"
#: Readable by the container's user, whoever owns the file on the host (see above).
FILE_MODE = 0o644


def values(settings: Settings) -> dict[str, str]:
    """The secret files' contents. An empty ADMIN_PASSWORD stays empty in effect (the
    migrations job generates one) but is written as a newline: Swarm refuses empty secrets.
    A stack of one database role (made before the split) has no superuser password: its
    one role is the superuser."""
    found = {name: settings.get(key) for name, key in SECRETS.items() if key}
    for key in REQUIRED:
        settings.require(key)
    found["postgres_superuser_password"] = (
        found["postgres_superuser_password"] or found["postgres_password"]
    )
    found["redis_location"] = f"redis://:{settings.get('REDIS_PASSWORD')}@redis:6379/1"
    found["admin_password"] = found["admin_password"] or "\n"
    return found


def overlay_values(settings: Settings) -> dict[str, str]:
    """The overlays' secret files' contents: each an HMAC of its purpose under SECRET_KEY
    (a new SECRET_KEY gives new ones; the overlay sets them again at its next start)."""
    key = settings.require("SECRET_KEY").encode()
    return {name: hmac.new(key, purpose.encode(), hashlib.sha256).hexdigest()
            for name, purpose in OVERLAY_SECRETS.items()}  # fmt: skip


def write_for_compose(settings: Settings) -> Path | None:
    """Write (or bring up to date) the secret files docker-compose.yaml mounts; returns
    their folder, or None when .env lacks what they are made of (compose itself then
    names the missing key). A file whose content is already right is left alone."""
    if not all(settings.get(key) for key in REQUIRED):
        return None
    folder = settings.root / FOLDER
    folder.mkdir(mode=DIR_MODE, exist_ok=True)
    folder.chmod(DIR_MODE)
    wanted = {**values(settings), **overlay_values(settings)}
    for name in wanted:
        path = folder / name
        if path.is_file() and path.read_text() == wanted[name]:
            continue
        with private_writer(path, file_mode=FILE_MODE) as handle:
            handle.write(wanted[name])
    return folder
