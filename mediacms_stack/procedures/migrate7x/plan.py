"""The plan: the old deployment read and everything decided before anything is touched;
refused early what would fail later. Printed by the dry run and by the real run."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from invoke.context import Context

from ...stack import config
from ...stack.config import Settings
from ...stack.errors import StackError
from ...stack.model import db_volume, volume_name
from .db import check_given_dump
from .legacy import OldDeployment
from .media import MediaFolder
from .settings import LOCAL_SETTINGS, SettingsPlan, secret_key, split_settings


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    return f"{size:.2f} GB"


@dataclass
class Plan:
    old: OldDeployment
    settings_plan: SettingsPlan | None
    secret: tuple[str, str]
    media_files: int
    media_bytes: int
    project: str
    dump: Path | None
    warnings: list[str] = field(default_factory=list)

    def lines(self, settings: Settings) -> list[str]:
        old, sp = self.old, self.settings_plan
        key, key_from = self.secret
        database_volume = volume_name(self.project, db_volume(settings))
        rows = [
            f"from         {old.tree} (compose project '{old.project}')",
            f"media        {old.media}: {self.media_files} files, {human(self.media_bytes)}"
            f" -> volume {volume_name(self.project)}, owner 33:33",
        ]
        if self.dump is not None:
            rows.append(f"database     given dump {self.dump} -> volume {database_volume}")
        else:
            rows.append(
                f"database     {old.pgdata() or '?'} (PostgreSQL {old.pg_major()}), dumped through"
                f" the old '{old.db_service}' service -> PostgreSQL 17 in volume "
                f"{database_volume}"
            )
        redis = old.redis_service()
        rows.append(
            f"sessions     Django's cached sessions in the old '{redis}' service -> the new "
            "redis, each with its remaining lifetime"
            if redis
            else "sessions     the old compose file has no Redis service: none to carry"
        )
        if sp is None:
            rows.append(f"settings     no {LOCAL_SETTINGS}: custom/local_settings.py not written")
        else:
            rows.append(
                f"settings     {LOCAL_SETTINGS} -> custom/local_settings.py "
                f"(kept: {', '.join(sp.kept) or 'nothing'})"
            )
            rows += [f"  dropped    {name}: {why}" for name, why in sp.dropped.items()]
        rows.append(
            f"secret key   from {key_from} -> .env SECRET_KEY"
            if key
            else "secret key   none found: a new one is generated (sessions and reset links "
            "end; passwords keep working)"
        )
        rows.append(f"new stack    {settings.root} (.env {settings.env_file})")
        rows += [f"WARNING      {warning}" for warning in self.warnings]
        rows.append(f"old folder   read only; rollback: cd {old.tree} && docker compose up -d")
        return rows


def make_plan(
    c: Context, path: Path, *, project: str, dump: Path | None, new_secret_key: bool = False
) -> Plan:
    """Read the old folder and decide everything; refuses early what would fail later."""
    old = OldDeployment.open(c, path)
    if old.project == project:
        raise StackError(
            f"the new stack's COMPOSE_PROJECT_NAME '{project}' is also the old deployment's "
            "project name, so the two would share containers; set another name in .env "
            "(for example COMPOSE_PROJECT_NAME=mediacms8)"
        )
    environment = old.environment()
    local = old.tree / LOCAL_SETTINGS
    settings_plan = (
        split_settings(local.read_text(), environment, origin=f"the 7.x {LOCAL_SETTINGS}")
        if local.is_file()
        else None
    )
    warnings = []
    if new_secret_key:
        secret = (secrets.token_urlsafe(50), "a new random key (--new-secret-key)")
        warnings.append("a new SECRET_KEY ends sessions and password-reset links")
    else:
        secret = secret_key(settings_plan or SettingsPlan(), old.tree, environment)
        if settings_plan is not None and "SECRET_KEY" in settings_plan.fallbacks:
            warnings.append(
                "SECRET_KEY is the fallback written in cms/local_settings.py; if that file came "
                "from upstream the key is public: consider --new-secret-key"
            )
    carried = {"SECRET_KEY": secret[0], **(settings_plan.to_env if settings_plan else {})}
    for name, value in carried.items():
        try:
            config.encode(name, value or "")  # refused here, before anything is touched
        except StackError as exc:
            fix = "pass --new-secret-key" if name == "SECRET_KEY" else f"set {name} in .env by hand"
            raise StackError(f"{exc}: {fix}") from None
    media = MediaFolder.of(old.media)
    if media.problems:
        raise StackError(
            f"{old.media} holds what the media copy cannot follow (nothing was changed):\n  "
            + "\n  ".join(media.problems[:20])
            + "\nreplace or remove each, then run it again"
        )
    if dump is not None:
        check_given_dump(dump)
    return Plan(old, settings_plan, secret, media.files, media.bytes, project, dump, warnings)
