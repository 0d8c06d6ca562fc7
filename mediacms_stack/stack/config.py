"""The one place that owns configuration: the ``.env`` file beside the compose files.

Compose reads the same file for interpolation, so a value set here reaches both the
tasks and the containers. ``.env.example`` documents every key; :func:`init` turns it
into a ``.env`` with random secrets (mode 600). Nothing else writes the file: every
later change goes through :func:`update`, one atomic write per call.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from dotenv import dotenv_values

from .errors import StackError
from .files import write_private

ROOT = Path(__file__).resolve().parents[2]


def home() -> Path:
    """Folder of the deployment: its .env, compose files and custom/ (default: this repo).

    MEDIACMS_HOME points elsewhere, e.g. at a folder holding only a downloaded
    docker-compose.yaml and its .env, which is all production needs.
    """
    return Path(os.environ.get("MEDIACMS_HOME", ROOT)).resolve()


ENV_FILE = ".env"
EXAMPLE_FILE = ".env.example"

#: Keys that must be set (no default anywhere) before production starts.
SECRET_KEYS = ("SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD")
#: Keys whose empty value in .env.example means "generate one" in :func:`init`.
GENERATED = {
    "SECRET_KEY": lambda: secrets.token_urlsafe(50),
    "POSTGRES_PASSWORD": lambda: secrets.token_urlsafe(24),
    "REDIS_PASSWORD": lambda: secrets.token_urlsafe(24),
    "POSTGRES_SUPERUSER_PASSWORD": lambda: secrets.token_urlsafe(24),
}
#: Keys that only a fresh .env gets from the example: an older stack's database has one
#: role, and `invoke upgrade` sets these when it separates them (see dbrole).
FRESH_ONLY = ("POSTGRES_SUPERUSER", "POSTGRES_SUPERUSER_PASSWORD")

_LINE = re.compile(r"^(?P<key>[A-Z_][A-Z0-9_]*)=(?P<value>.*)$")
_KEY = re.compile(r"[A-Z_][A-Z0-9_]*")
#: Written as they are: compose and python-dotenv read these characters literally.
_PLAIN = re.compile(r"[A-Za-z0-9_.,:/@%+=-]*")


@dataclass(frozen=True)
class Settings:
    """Values of a ``.env`` file, the file (which need not exist yet) and the folder they
    apply to. Made by :func:`load`; changed on disk by :func:`update` alone."""

    root: Path
    values: Mapping[str, str]
    env_file: Path

    def get(self, key: str, default: str = "") -> str:
        value = self.values.get(key)
        return default if value is None or value == "" else value

    def require(self, key: str) -> str:
        value = self.get(key)
        if not value:
            raise StackError(
                f"{key} is not set in {self.env_file}; run `invoke init` or add it there"
            )
        return value

    @property
    def project(self) -> str:
        return self.get("COMPOSE_PROJECT_NAME", "mediacms")

    @property
    def version(self) -> str:
        return self.get("MEDIACMS_VERSION", "latest")

    @property
    def registry(self) -> str:
        return self.get("IMAGE_REGISTRY")


def load(root: Path = ROOT, env_file: str | Path | None = None) -> Settings:
    """Read ``.env`` (or ``env_file``) without touching ``os.environ``."""
    path = Path(env_file) if env_file else root / ENV_FILE
    if not path.is_absolute():
        path = root / path
    values: dict[str, str] = {}
    if path.is_file():
        values = {k: v or "" for k, v in dotenv_values(path).items()}
    return Settings(root=root, values=values, env_file=path)


def missing_keys(settings: Settings) -> list[str]:
    """Keys documented in ``.env.example`` that the settings lack entirely (but for the
    :data:`FRESH_ONLY` ones, which an older .env lacks by design)."""
    documented = dotenv_values(ROOT / EXAMPLE_FILE)
    return [key for key in documented if key not in settings.values and key not in FRESH_ONLY]


def encode(key: str, value: str) -> str:
    """``KEY=value`` as a .env line that compose and python-dotenv both read back as ``value``.

    Compose expands ``$`` in unquoted and double-quoted values and reads single-quoted
    ones literally except ``\\'``; python-dotenv also decodes ``\\\\`` there. So:
    plain characters unquoted; anything else in single quotes (``'`` as ``\\'``) when it
    has no backslash; else in double quotes (``\\`` and ``"`` escaped) when it has no
    ``$``. A value with both a backslash and ``$``, or with ``${`` (python-dotenv expands it
    in any quotes), has no spelling both read alike: refused.
    """
    if not _KEY.fullmatch(key):
        raise StackError(f"{key!r} is not a valid .env key (A-Z, 0-9 and _, not starting with a "
                         "digit); nothing was written")  # fmt: skip
    bad = next((name for char, name in (("\n", "a newline"), ("\r", "a carriage return"),
                                        ("\0", "a NUL byte")) if char in value), None)  # fmt: skip
    if bad:
        raise StackError(f"the value of {key} holds {bad}, which a .env line cannot hold; "
                         "nothing was written")  # fmt: skip
    if "${" in value:
        raise StackError(f"the value of {key} holds ${{, which python-dotenv expands even in "
                         "quotes; nothing was written")  # fmt: skip
    if _PLAIN.fullmatch(value):
        return f"{key}={value}"
    if "\\" not in value:
        return f"{key}='" + value.replace("'", "\\'") + "'"
    if "$" not in value:
        return f'{key}="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise StackError(f"the value of {key} holds both a backslash and $, which compose and "
                     "python-dotenv cannot both read literally; nothing was written")  # fmt: skip


def update(settings: Settings, changes: Mapping[str, str], *, dry_run: bool = False) -> Settings:
    """Set ``changes`` in the settings' .env in one atomic write; returns the settings read
    back from it (a dry run writes nothing and returns them as they would be).

    The one writer of an existing .env (:func:`init` makes a new one). Every key and value
    is checked (:func:`encode`) before anything is written; then the whole file goes to a
    temp file beside it (mode 600, fsynced) that replaces it in one rename, so a reader
    sees the old file or the new one, never a part. Other lines and comments are kept; a
    key set twice in the file is set once (compose and python-dotenv would both take the
    last one); a missing file is created. No changes: nothing is written.
    """
    lines = {key: encode(key, value) for key, value in changes.items()}
    if not lines:
        return settings
    if dry_run:
        return replace(settings, values={**settings.values, **changes})
    path = settings.env_file
    old = path.read_text().splitlines() if path.is_file() else []
    text, done = [], set()
    for line in old:
        match = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        key = match[1] if match else None
        if key in lines:
            if key not in done:
                text.append(lines[key])
                done.add(key)
            continue
        text.append(line)
    text += [line for key, line in lines.items() if key not in done]
    write_private(path, "\n".join(text) + "\n")
    return load(settings.root, path)


def render(example: str, overrides: Mapping[str, str], generate: bool = True) -> str:
    """Fill ``.env.example``'s text: overrides first, then generated secrets."""
    for key, value in overrides.items():
        encode(key, value)  # refuse bad input before anything else
    lines = []
    seen = set()
    for line in example.splitlines():
        match = _LINE.match(line)
        if match:
            key, value = match["key"], match["value"]
            seen.add(key)
            if key in overrides:
                line = encode(key, overrides[key])
            elif value == "" and generate and key in GENERATED:
                line = encode(key, GENERATED[key]())
        lines.append(line)
    extra = [encode(k, v) for k, v in overrides.items() if k not in seen]
    if extra:
        lines += ["", "# set by invoke init", *extra]
    return "\n".join(lines) + "\n"


def init(
    root: Path = ROOT,
    overrides: Mapping[str, str] | None = None,
    *,
    env_file: str | Path = ENV_FILE,
    force: bool = False,
    example: Path | None = None,
) -> Path:
    """Write ``.env`` from ``.env.example`` with random secrets, readable by its owner only."""
    path = root / env_file
    text = render((example or root / EXAMPLE_FILE).read_text(), dict(overrides or {}))
    if path.exists() and not force:
        raise StackError(f"{path} exists; keep it, or pass --force to replace it")
    if not path.parent.is_dir():
        raise StackError(
            f"{path.parent} is not a folder: create it first, or name another "
            "place for the settings (MEDIACMS_ENV_FILE); nothing was written"
        )
    write_private(path, text)
    return path
