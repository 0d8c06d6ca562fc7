"""The one place that owns configuration: the ``.env`` file beside the compose files.

Compose reads the same file for interpolation, so a value set here reaches both the
tasks and the containers. ``.env.example`` documents every key; :func:`init` turns it
into a ``.env`` with random secrets (mode 600).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from .shell import StackError

ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    """Folder of the deployment: its .env, compose files and custom/ (default: this repo).

    MEDIACMS_HOME points elsewhere, e.g. at a folder holding only a downloaded
    docker-compose.yaml and its .env, which is all production needs.
    """
    return Path(os.environ.get("MEDIACMS_HOME", ROOT)).resolve()


ENV_FILE = ".env"
EXAMPLE_FILE = ".env.example"

#: Keys that must be set (no default anywhere) before production starts.
SECRET_KEYS = ("SECRET_KEY", "POSTGRES_PASSWORD")
#: Keys whose empty value in .env.example means "generate one" in :func:`init`.
GENERATED = {
    "SECRET_KEY": lambda: secrets.token_urlsafe(50),
    "POSTGRES_PASSWORD": lambda: secrets.token_urlsafe(24),
    "REDIS_PASSWORD": lambda: secrets.token_urlsafe(24),
}

_LINE = re.compile(r"^(?P<key>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


@dataclass(frozen=True)
class Settings:
    """Values of a ``.env`` file, with the folder they apply to."""

    root: Path
    values: Mapping[str, str] = field(default_factory=dict)
    env_file: Path | None = None

    def get(self, key: str, default: str = "") -> str:
        value = self.values.get(key)
        return default if value is None or value == "" else value

    def require(self, key: str) -> str:
        value = self.get(key)
        if not value:
            where = self.env_file or self.root / ENV_FILE
            raise StackError(f"{key} is not set in {where}; run `invoke init` or add it there")
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
    """Keys documented in ``.env.example`` that the settings lack entirely."""
    documented = dotenv_values(ROOT / EXAMPLE_FILE)
    return [key for key in documented if key not in settings.values]


def render(example: str, overrides: Mapping[str, str], generate: bool = True) -> str:
    """Fill ``.env.example``'s text: overrides first, then generated secrets."""
    lines = []
    seen = set()
    for line in example.splitlines():
        match = _LINE.match(line)
        if match:
            key, value = match["key"], match["value"]
            seen.add(key)
            if key in overrides:
                value = overrides[key]
            elif value == "" and generate and key in GENERATED:
                value = GENERATED[key]()
            line = f"{key}={value}"
        lines.append(line)
    extra = [f"{k}={v}" for k, v in overrides.items() if k not in seen]
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
    if path.exists() and not force:
        raise StackError(f"{path} exists; keep it, or pass --force to replace it")
    text = render((example or root / EXAMPLE_FILE).read_text(), dict(overrides or {}))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)
    return path
