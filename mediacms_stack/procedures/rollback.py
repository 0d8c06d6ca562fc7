"""Back to the version before an upgrade: ``invoke upgrade --rollback FOLDER`` by hand, and
the automatic one of a new version that failed.

``--rollback FOLDER`` puts back the version recorded in the backup (re-tagging the exact
image ids it recorded when a rebuild moved the tag), restores database, media and
custom/ from it (the database as a whole: tables of newer migrations go too) and waits
until every service is healthy. nginx answers with its 503 page meanwhile, and is
replaced last, alone: visitors get the page, not a closed port.
"""

from __future__ import annotations

from pathlib import Path

from invoke.context import Context

from ..data import artifacts, restore
from ..engines.compose import Compose
from ..engines.shell import dry, run, say
from ..engines.steps import Steps
from ..stack import config
from ..stack.config import Settings
from ..stack.errors import StackError
from ..stack.model import BEHIND_NGINX
from .transition import current_state, maintenance, short_id, start_healthy_nginx_last, summary


def roll_back_failed(
    c: Context, compose: Compose, failed: Settings, folder: Path, *, migrated: bool,
    backups: Path, timeout: int,
) -> str:  # fmt: skip
    """The upgrade to ``failed``'s version undone: with its migrations, by the whole
    rollback from the backup (data included); without (the database is as the old version
    left it, and it served meanwhile), the old images and version only. Says what it did."""
    if migrated:
        rollback(c, compose, failed, folder, backups=backups, timeout=timeout)
        did = "its images, and its database, media and custom/ from the backup"
    else:
        manifest = artifacts.check_backup_folder(folder).manifest
        old = manifest["mediacms_version"]
        restore_images(c, manifest.get("images") or {})
        config.update(failed, {"MEDIACMS_VERSION": old})
        why = start_healthy_nginx_last(c, compose, timeout)
        if why:
            raise StackError(f"back on {old}'s images, but the stack is not healthy: {why}")
        did = "its images (no migration had run: the data stayed as they were)"
        # the maintenance path's nginx was never replaced: its page goes now
        maintenance(c, compose, on=False)
    return did


def restore_images(c: Context, recorded: dict[str, list[str]]) -> None:
    """Make each recorded reference point at the recorded image id again (a rebuild or pull
    of the same tag moved it); refuse when the reference is gone altogether."""
    from ..engines import engine

    for service, (ref, image_id) in sorted(recorded.items()):
        found = engine.image(ref)
        current = found.id if found is not None else None
        if current == image_id:
            continue
        if engine.image(image_id) is None:
            if current is None:
                raise StackError(
                    f"image {ref} of service {service} is gone (it was {short_id(image_id)}); "
                    "pull it or build it for that version, then run the rollback again"
                )
            say(f"{ref}: {short_id(image_id)} is gone, using {short_id(current)}")
            continue
        run(c, ["docker", "image", "tag", image_id, ref], in_stream=False)


def rollback(
    c: Context,
    compose: Compose,
    settings: Settings,
    folder: Path,
    *,
    backups: Path,
    timeout: int = 300,
) -> None:
    """Return to the version, images and data of a backup taken by ``upgrade``.

    Every artifact of the backup is verified before anything changes, and the data are
    restored all or nothing (:func:`restore.restore_all`); a dry run only reads the folder.
    """
    parts = artifacts.check_backup_folder(folder)
    old = parts.manifest.get("mediacms_version")
    if not old:
        raise StackError(
            f"{folder / 'manifest.json'} does not record the version it was taken from"
        )
    recorded = parts.manifest.get("images") or {}
    if dry(c):
        print(f"(dry run) would re-tag the images recorded in {folder.name} "
              f"({', '.join(sorted(recorded)) or 'none recorded'})")  # fmt: skip
        restore.restore_all(c, compose, settings, folder, yes=True, safety_dir=backups)
        print(f"(dry run) would set MEDIACMS_VERSION={old} in {settings.env_file}, then start "
              "every service and wait until healthy")  # fmt: skip
        return
    compose.up(c, "db", "redis", timeout=timeout)  # e.g. after `invoke down`
    before = current_state(c, compose, settings)

    say(f"rollback: MediaCMS {settings.version} -> {old}, from {folder}")
    steps = Steps(4)
    with steps.step(f"the images recorded in {folder.name}"):
        restore_images(c, recorded)
    maintenance(c, compose, on=True)
    with steps.step("database, media and custom/ from the backup, nginx's 503 page meanwhile"):
        restore.restore_all(c, compose, settings, folder, yes=True, safety_dir=backups,
                            start=False, stop=BEHIND_NGINX)  # fmt: skip
    # recorded once the data are back, before the services start on the old images
    with steps.step(f"MEDIACMS_VERSION={old} in {settings.env_file}"):
        restored = config.update(settings, {"MEDIACMS_VERSION": old})
    with steps.step("every service started on the old images, healthy, nginx last"):
        why = start_healthy_nginx_last(c, compose, timeout)
        if why:
            raise StackError(f"rolled back to {old}, but the stack is not healthy: {why}")
        maintenance(c, compose, on=False)  # an nginx that was not replaced keeps its flag
    say(summary("rolled back", before, current_state(c, compose, restored), folder))
