"""The 7.x deployment as it stands: its folder, read through its own compose file and
never written to."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from invoke.context import Context

from ...data import database
from ...engines.compose import Compose
from ...stack.errors import StackError


@dataclass
class OldDeployment:
    """A 7.x folder, read through its own compose file; never written to."""

    tree: Path
    compose: Compose
    config: dict
    db_service: str = "db"

    @classmethod
    def open(cls, c: Context, path: Path, *, db_service: str = "db") -> OldDeployment:
        tree = path.resolve()
        if not tree.exists():
            raise StackError(
                f"{path} does not exist; --from is the 7.x deployment's MediaCMS folder"
            )
        if not tree.is_dir():
            raise StackError(
                f"{path} is not a folder; --from is the 7.x deployment's MediaCMS folder"
            )
        if not (tree / "manage.py").is_file() or not (tree / "cms").is_dir():
            raise StackError(f"{tree} is not a MediaCMS tree (no manage.py and cms/ there)")
        compose_file = next(
            (n for n in ("docker-compose.yaml", "docker-compose.yml") if (tree / n).is_file()),
            None,
        )
        if compose_file is None:
            raise StackError(f"{tree} has no docker-compose.yaml: not a 7.x Docker deployment")
        compose = Compose(tree, (compose_file,), project=None, writes=False)
        config = json.loads(compose.query(c, "config", "--format", "json") or "{}")
        if db_service not in config.get("services", {}):
            raise StackError(f"{tree}/{compose_file} has no '{db_service}' service")
        return cls(tree, compose, config, db_service)

    @property
    def project(self) -> str:
        return self.config.get("name", "")

    @property
    def media(self) -> Path:
        return self.tree / "media_files"

    def environment(self) -> dict[str, str]:
        """The app's environment in the old compose file (web first, then the others)."""
        services = self.config.get("services", {})
        merged: dict[str, str] = {}
        for name in sorted(services, key=lambda n: (n != "web", n)):
            if name == self.db_service:
                continue
            for key, value in (services[name].get("environment") or {}).items():
                merged.setdefault(key, value or "")
        return merged

    def db_env(self, key: str, default: str) -> str:
        env = self.config["services"][self.db_service].get("environment") or {}
        return env.get(key) or default

    def pgdata(self) -> Path | None:
        for mount in self.config["services"][self.db_service].get("volumes") or []:
            if mount.get("type") == "bind" and mount.get("target", "").rstrip("/") in (
                "/var/lib/postgresql/data",
                "/var/lib/postgresql",
            ):
                return Path(mount["source"])
        return None

    def pg_major(self) -> str:
        data = self.pgdata()
        version = data / "PG_VERSION" if data else None
        return version.read_text().strip() if version and version.is_file() else "unknown"

    def database(self) -> database.Database:
        return database.Database(self.compose, self.db_env("POSTGRES_USER", "mediacms"),
                               self.db_env("POSTGRES_DB", "mediacms"))  # fmt: skip

    def running(self, c: Context) -> list[str]:
        return [r["Service"] for r in self.compose.ps(c, all_=False) if r.get("State") == "running"]

    def redis_service(self) -> str | None:
        """The service running Redis (7.x: ``redis``), where the sessions are."""
        services = self.config.get("services", {})
        if "redis" in services:
            return "redis"
        return next((n for n, s in services.items() if "redis" in s.get("image", "")), None)
