"""What the plan carries into the new stack's own files: ``custom/local_settings.py``
and the ``.env`` keys."""

from __future__ import annotations

from pathlib import Path

from ...data import artifacts
from ...stack import config, files
from ...stack.config import Settings
from ...stack.errors import StackError
from ...stack.model import BACKUPS_DIR
from .plan import Plan


def carry_settings(plan: Plan, settings: Settings, *, yes: bool) -> list[str]:
    """Write custom/local_settings.py and the .env keys; returns what was done."""
    done = []
    sp = plan.settings_plan
    if sp is not None and sp.text is not None:
        target = settings_conflict(plan, settings, yes=yes)
        if target.is_file() and target.read_text() != sp.text:
            target.with_suffix(".py.bak").write_text(target.read_text())
            done.append(f"kept the previous {target.name} as {target.name}.bak")
        target.parent.mkdir(parents=True, exist_ok=True)
        compile(sp.text, str(target), "exec")
        files.write_shared(target, sp.text)  # the stack never reads half a file
        done.append(f"wrote {target}")
    env_file = settings.env_file
    values = dict(sp.to_env) if sp is not None else {}
    key, _ = plan.secret
    if key:
        values["SECRET_KEY"] = key
    if values and env_file.is_file():
        saved = (
            artifacts.backup_dir(settings.root / BACKUPS_DIR)
            / f"env-before-migrate-{artifacts.utc_stamp()}"
        )
        files.copy_private(env_file, saved)
        done.append(f"saved the previous .env as {saved}")
    if values:
        config.update(settings, values)
        done += [f"set {name} in {env_file}" for name in values]
    return done


def settings_conflict(plan: Plan, settings: Settings, *, yes: bool) -> Path:
    """custom/local_settings.py, refusing to replace a different one without --yes."""
    target = settings.root / "custom" / "local_settings.py"
    sp = plan.settings_plan
    text = sp.text if sp is not None else None
    if text is not None and target.is_file() and target.read_text() != text and not yes:
        raise StackError(f"{target} exists; pass --yes to replace it (a .bak is kept)")
    return target
