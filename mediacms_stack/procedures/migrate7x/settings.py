"""The old ``cms/local_settings.py``, read through :mod:`ast`: what the operator set stays,
what the new layout owns is commented out with the reason, SECRET_KEY and the literal
FRONTEND_HOST/PORTAL_NAME move into ``.env``; and where the old SECRET_KEY came from."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ...stack.errors import StackError

#: Settings the new layout sets from .env in the image's settings bridge.
OWNED = {
    "DATABASES": "the database comes from POSTGRES_* in .env",
    "CACHES": "the cache is REDIS_LOCATION from the stack",
    "REDIS_LOCATION": "Redis is the stack's redis service",
    "BROKER_URL": "the Celery broker is the stack's Redis",
    "CELERY_BROKER_URL": "the Celery broker is the stack's Redis",
    "CELERY_RESULT_BACKEND": "the Celery results go to the stack's Redis",
    "POSTGRES_HOST": "the database host is the stack's db service",
    "POSTGRES_PORT": "the database port is the stack's db service",
    "POSTGRES_NAME": "POSTGRES_DB in .env",
    "POSTGRES_USER": "POSTGRES_USER in .env",
    "POSTGRES_PASSWORD": "POSTGRES_PASSWORD in .env",
    "MP4HLS_COMMAND": "the image installs Bento4 at the contract path",
}
#: Settings that move into .env (when their value can be known without running Django).
TO_ENV = ("SECRET_KEY", "FRONTEND_HOST", "PORTAL_NAME")
LOCAL_SETTINGS = Path("cms/local_settings.py")
SECRET_KEY_FILE = ".secret_key"  # noqa: S105 - a file name


@dataclass
class SettingsPlan:
    """What becomes of the old ``cms/local_settings.py``."""

    text: str | None = None
    kept: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    to_env: dict[str, str] = field(default_factory=dict)
    #: names whose value is the fallback written in the file (no environment value)
    fallbacks: set[str] = field(default_factory=set)


def _getenv_call(node: ast.expr) -> tuple[str, ast.expr | None] | None:
    """``os.getenv("K", d)`` / ``os.environ.get("K", d)`` -> ("K", d)."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    name = ast.unparse(node.func)
    if name not in ("os.getenv", "os.environ.get", "getenv", "environ.get"):
        return None
    key = node.args[0]
    if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
        return None
    return key.value, (node.args[1] if len(node.args) > 1 else None)


def resolve_value(node: ast.expr, environment: Mapping[str, str]) -> str | None:
    """The value a settings expression had in the old container, when knowable statically."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    call = _getenv_call(node)
    if call is not None:
        key, default = call
        if environment.get(key):
            return environment[key]
        return resolve_value(default, environment) if default is not None else None
    return None


def split_settings(source: str, environment: Mapping[str, str], *, origin: str) -> SettingsPlan:
    """Keep the operator's overrides, comment out what the new layout owns.

    Lines are kept as written (comments and layout too); a dropped statement stays in
    the file, commented out with the reason, so nothing disappears silently.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise StackError(f"{origin} does not parse ({error}); fix it before migrating") from None
    plan = SettingsPlan()
    lines = source.splitlines()
    notes: dict[int, str] = {}
    for statement in tree.body:
        targets: list[ast.expr] = []
        if isinstance(statement, ast.Assign):
            targets = list(statement.targets)
        elif isinstance(statement, ast.AnnAssign):
            targets = [statement.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if not names:
            continue
        reasons = []
        for name in names:
            if name in TO_ENV:
                value = resolve_value(statement.value, environment)  # type: ignore[arg-type]
                if value is not None:
                    plan.to_env[name] = value
                    call = _getenv_call(statement.value)  # type: ignore[arg-type]
                    if call is not None and not environment.get(call[0]):
                        plan.fallbacks.add(name)
                    reason = f"moved to .env as {name}"
                else:
                    reason = f"not a literal: set {name} in .env"
                plan.dropped[name] = reason
                reasons.append(reason)
            elif name in OWNED:
                plan.dropped[name] = OWNED[name]
                reasons.append(OWNED[name])
            else:
                plan.kept.append(name)
        if reasons:
            first, last = statement.lineno - 1, (statement.end_lineno or statement.lineno) - 1
            notes[first] = "; ".join(dict.fromkeys(reasons))
            for index in range(first, last + 1):
                lines[index] = "# " + lines[index]
            lines[first] = f"# [migrate-from-7x: {notes[first]}]\n{lines[first]}"
    header = (
        f'"""Operator settings carried over from {origin} by `invoke migrate-from-7x`.\n\n'
        "Statements that the new layout owns (database, Redis, secrets, host names) are\n"
        'commented out below with the reason; everything else is as it was."""\n'
    )
    plan.text = header + "\n".join(lines) + "\n"
    return plan


def secret_key(plan: SettingsPlan, tree: Path, environment: Mapping[str, str]) -> tuple[str, str]:
    """(key, where it came from), in the order the old container read it; ('', why) if none."""
    if plan.to_env.get("SECRET_KEY"):
        return plan.to_env["SECRET_KEY"], str(LOCAL_SETTINGS)
    if environment.get("SECRET_KEY"):
        return environment["SECRET_KEY"], "the old compose environment"
    key_file = tree / SECRET_KEY_FILE
    if key_file.is_file() and key_file.read_text().strip():
        return key_file.read_text().strip(), SECRET_KEY_FILE
    return "", "none found"
