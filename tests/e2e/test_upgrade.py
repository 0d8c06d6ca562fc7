"""`invoke upgrade` end to end on the smoke stack: a failed upgrade that rolls back by
itself, a real upgrade that migrates, and the rollback of that upgrade.

New versions of the test application are built from temporary copies of tests/app with
one migration added (one file changed: BuildKit rebuilds only the tree's layers, a few
seconds). The upgrades run from a temporary copy of this repository, so that what
they stage and lock is theirs alone. The images made here are tagged `<version>-base-<pid>` (the images the stack
ran), `<version>-upgrade-<pid>` and `<version>-broken-<pid>`, and removed at the end;
the stack ends on the shared smoke tags again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import requests
from dotenv import dotenv_values
from invoke import Context

from mediacms_stack.data import artifacts
from mediacms_stack.engines import stackstate
from mediacms_stack.procedures import ops
from mediacms_stack.procedures.transition import short_id
from mediacms_stack.stack import config
from mediacms_stack.stack.model import SERVICES
from tests.versions import FAILING, Versions

pytestmark = pytest.mark.e2e

MEDIA = "/home/mediacms.io/mediacms/media_files"
PROBE = "9001_upgrade_probe"  # numbered past any migration the test app will have
GOOD_MIGRATION = """from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("files", "{newest}")]
    operations = [
        migrations.RunSQL(
            "CREATE TABLE files_upgrade_probe (id bigint PRIMARY KEY, note text NOT NULL);"
            "INSERT INTO files_upgrade_probe VALUES (1, 'applied by invoke upgrade');",
            reverse_sql="DROP TABLE files_upgrade_probe;",
        )
    ]
"""


class Upgrades(Versions):
    """The stack under test and its versions: ``original`` (private tags of the images it
    runs, made by the fixture), ``good`` (a migration that applies) and ``broken`` (one
    that fails)."""

    def __init__(self, stack, root: Path) -> None:
        super().__init__(stack, root)
        self.original = f"{self.shared}-base-{os.getpid()}"
        self.good = self.make("upgrade", {PROBE: GOOD_MIGRATION})
        self.broken = self.make("broken", {"9001_broken_probe": FAILING})

    def upgrade_to(self, version: str) -> subprocess.CompletedProcess:
        return self.upgrade(version, *self.from_source(version))

    def env_version(self) -> str:
        return dotenv_values(self.stack.settings.env_file)["MEDIACMS_VERSION"]


def running_images(stack) -> dict[str, tuple[str, str]]:
    return stackstate.stack_images(Context(), stack.compose)


def image_id(ref: str) -> str:
    done = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def state(stack) -> dict[str, str]:
    """Users (with password hashes) and every media file (owner, path, sha256)."""
    users = stack.invoke("admin-shell", "--django", "-c",
                         "from users.models import User; "
                         "print(sorted(User.objects.values_list('username', 'password')))")  # fmt: skip
    media = stack.dc("exec", "-T", "web", "sh", "-c",
                     f"cd {MEDIA} && find . -type f -printf '%U:%G %p\\n' | sort && "
                     "find . -type f -print0 | sort -z | xargs -0 sha256sum")  # fmt: skip
    return {"users": users.stdout.strip().splitlines()[-1], "media": media.stdout}


def migrations_of(stack) -> str:
    return stack.invoke("manage", "showmigrations files").stdout


def table_exists(stack, name: str) -> bool:
    done = stack.dc("exec", "-T", "db", "psql", "-U", stack.settings.get("POSTGRES_USER",
                    "mediacms"), "-d", stack.settings.get("POSTGRES_DB", "mediacms"), "-Atc",
                    f"SELECT to_regclass('public.{name}') IS NOT NULL")  # fmt: skip
    return done.stdout.strip() == "t"


def all_healthy(stack) -> None:
    rows = ops.status_rows(Context(), stack.compose)
    bad = [r for r in rows if r[0] in SERVICES and (r[1] != "running" or r[2] != "healthy")]
    assert not bad and set(SERVICES) <= {r[0] for r in rows}, rows


def backup_folder(output: str) -> Path:
    match = re.search(r"^\[upgrade\] full backup: (\S+)$", output, re.M)
    assert match, output
    return Path(match[1])


def switch_version(stack, version: str) -> None:
    config.update(stack.settings, {"MEDIACMS_VERSION": version})
    stack.dc("up", "--detach", "--wait", "--wait-timeout", "300")


@pytest.fixture(scope="module")
def upgrades(stack, tmp_path_factory):
    """The stack moved onto private tags of the images it runs (`<version>-base-<pid>`),
    so that a rollback, which re-tags the image ids it recorded, never moves the shared
    smoke tags that other builds on this engine may have moved meanwhile; moved back to
    the shared tags at the end."""
    setup = Upgrades(stack, tmp_path_factory.mktemp("upgrade"))
    running = running_images(stack)
    base = setup.refs(setup.original)
    for ref, service in zip(base, ("web", "celery_long", "nginx"), strict=True):
        subprocess.run(["docker", "image", "tag", running[service][1], ref], check=True)
    switch_version(stack, setup.original)
    probe = (
        "from users.models import User; "
        "User.objects.filter(username='upgrade-probe').exists() or "
        "User.objects.create_user('upgrade-probe', password='upgrade-Pass-7'); print('ok')"
    )
    stack.invoke("admin-shell", "--django", "-c", probe)
    stack.dc("exec", "-T", "web", "sh", "-c",
             f"mkdir -p {MEDIA}/original && head -c 300000 /dev/urandom > {MEDIA}/original/up.mp4"
             f" && echo hidden > {MEDIA}/.upgrade-dotfile")  # fmt: skip
    setup.before = running_images(stack)
    setup.state = state(stack)
    yield setup
    switch_version(stack, setup.shared)
    setup.remove(setup.original, setup.good, setup.broken)


def test_a_failed_upgrade_rolls_back_by_itself(stack, upgrades):
    """A migration that fails (RunPython: the maintenance path): the old version, its
    images and its data come back without an operator's command, the page goes."""
    failed = upgrades.upgrade_to(upgrades.broken)
    assert failed.returncode != 0, failed.stdout
    folder = backup_folder(failed.stdout)
    report = failed.stderr
    assert "did not come up healthy" in report and "fails on purpose" in report, report
    assert (
        f"Rolled back to {upgrades.original} automatically (its images, and its "
        "database, media and custom/ from the backup); every service is healthy"
    ) in report
    assert str(folder) in report
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["mediacms_version"] == upgrades.original
    assert upgrades.env_version() == upgrades.original
    all_healthy(stack)
    assert running_images(stack) == upgrades.before
    assert state(stack) == upgrades.state
    assert "broken_probe" not in migrations_of(stack)
    home = requests.get(stack.url("/"), timeout=30)  # the maintenance page went too
    assert home.status_code == 200 and "Retry-After" not in home.headers


def test_upgrade_backs_up_builds_migrates_reports_and_rolls_back(stack, upgrades):
    """A good upgrade, then its rollback from the backup it took (one test: the rollback
    needs that upgrade, and no test may rely on another having run first)."""
    done = upgrades.upgrade_to(upgrades.good)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout

    # a full backup, taken before anything changed
    folder = backup_folder(out)
    assert out.index(f"[upgrade] full backup: {folder}") < out.index("[upgrade] step 2/5")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["mediacms_version"] == upgrades.original
    assert {k: tuple(v) for k, v in manifest["images"].items()} == upgrades.before
    dump_manifest = json.loads((folder / (manifest["database"] + ".manifest.json")).read_text())
    assert "files.0001_initial" in dump_manifest["migrations"]
    assert f"files.{PROBE}" not in dump_manifest["migrations"]
    assert dump_manifest["row_counts"]["users_user"] >= 2
    artifacts.verify_checksum(folder / manifest["database"])
    artifacts.verify_checksum(folder / manifest["media"])

    # the new images run, the new migration is applied, nothing was lost
    after = running_images(stack)
    for service, ref in (("web", 0), ("celery_long", 1), ("nginx", 2)):
        new_ref = upgrades.refs(upgrades.good)[ref]
        assert after[service] == (new_ref, image_id(new_ref)), after
    assert after["db"] == upgrades.before["db"]
    assert upgrades.env_version() == upgrades.good
    assert f"[X] {PROBE}" in migrations_of(stack)
    assert table_exists(stack, "files_upgrade_probe")
    all_healthy(stack)
    assert stack.wait_http("/").status_code == 200
    assert state(stack) == upgrades.state

    # the summary: versions, image reference and id per service, migrations, backup
    assert f"[upgrade] upgraded: MediaCMS {upgrades.original} -> {upgrades.good}" in out
    old_web, new_web = upgrades.before["web"], after["web"]
    web_row = next(line for line in out.splitlines() if line.startswith("web "))
    assert f"{old_web[0]} ({short_id(old_web[1])})" in web_row
    assert f"{new_web[0]} ({short_id(new_web[1])})" in web_row
    assert re.search(r"^db\s+.*unchanged$", out, re.M)
    assert f"migrations applied (1): files.{PROBE}" in out
    assert f"roll back with: invoke upgrade --rollback {folder}" in out

    # rolled back from that backup: the old images, version and schema, nothing lost
    back = upgrades.invoke("upgrade", "--rollback", str(folder))
    assert back.returncode == 0, back.stdout + back.stderr
    assert f"migrations rolled back (1): files.{PROBE}" in back.stdout
    assert upgrades.env_version() == upgrades.original
    assert running_images(stack) == upgrades.before
    assert not table_exists(stack, "files_upgrade_probe")  # the whole schema was restored
    assert PROBE not in migrations_of(stack)
    all_healthy(stack)
    assert state(stack) == upgrades.state


def test_rollback_puts_a_moved_tag_back_on_the_recorded_image(stack):
    """An upgrade that rebuilt or re-pulled the same tag: the rollback re-tags the image id
    recorded in the backup; a reference gone altogether is refused with its fix."""
    from mediacms_stack.procedures.rollback import restore_images
    from mediacms_stack.stack.errors import StackError

    ref = f"mediacms-upgrade-probe/retag:{os.getpid()}"
    moved_to = image_id(stack.settings.get("REDIS_IMAGE"))
    recorded = image_id(stack.settings.get("POSTGRES_IMAGE"))
    subprocess.run(["docker", "image", "tag", moved_to, ref], check=True)
    try:
        restore_images(Context(), {"probe": [ref, recorded]})
        assert image_id(ref) == recorded
        gone = {"probe": [f"{ref}-absent", "sha256:" + "0" * 64]}
        with pytest.raises(StackError, match=r"is gone.*pull it or build it"):
            restore_images(Context(), gone)
    finally:
        subprocess.run(["docker", "image", "rm", ref], capture_output=True, check=False)
