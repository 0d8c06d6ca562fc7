"""New versions of the test application, for the upgrade tests and the availability
bench: each is a copy of tests/app with migrations of its own after the app's newest,
built and upgraded to through a copy of this repository (a build or an upgrade there
never touches the checkout's .build/ or its .env)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from mediacms_stack.images import mediacms
from mediacms_stack.stack import config, model

IGNORE = shutil.ignore_patterns(".git", ".nox", ".venv", "node_modules", "__pycache__", "backups",
                                ".build", ".pytest_cache", ".ruff_cache")  # fmt: skip
#: the test app's newest migration of `files`: a new version's come after it
NEWEST = max(m.stem for m in (config.ROOT / "tests/app/files/migrations").glob("[0-9]*.py"))
#: A migration that fails: an upgrade to its version fails, and is rolled back.
FAILING = """from django.db import migrations


def fail(apps, schema_editor):
    raise RuntimeError("upgrade probe: this migration fails on purpose")


class Migration(migrations.Migration):
    dependencies = [("files", "{newest}")]
    operations = [migrations.RunPython(fail)]
"""

#: A nullable column: additive, upgrade's zero-downtime path (with ``reads_the_note``).
ADD = """from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("files", "{newest}")]
    operations = [
        migrations.AddField("media", "gate_note", models.TextField(null=True, blank=True))
    ]
"""
#: ADD's column dropped again: upgrade's maintenance path.
DROP = """from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("files", "9101_gate_note")]
    operations = [migrations.RemoveField("media", "gate_note")]
"""


def reads_the_note(tree: Path) -> None:
    """A version's models that read ADD's column."""
    models = tree / "files" / "models.py"
    anchor = "    add_date = models.DateTimeField(auto_now_add=True)\n"
    assert anchor in models.read_text()
    models.write_text(models.read_text().replace(
        anchor, anchor + "    gate_note = models.TextField(null=True, blank=True)\n"))  # fmt: skip


class Versions:
    """The stack the versions are for (anything with ``settings`` and ``env()``, as
    tests/e2e's Stack), the repository copy that drives it, and the versions made."""

    def __init__(self, stack, root: Path) -> None:
        self.stack, self.root = stack, root
        self.repo = root / "repo"
        shutil.copytree(mediacms.ROOT, self.repo, ignore=IGNORE, symlinks=True)
        self.shared = stack.settings.version  # the tag the images the stack runs carry
        self.trees: dict[str, Path] = {}

    def make(self, label: str, migrations: dict[str, str],
             edit: Callable[[Path], None] | None = None) -> str:  # fmt: skip
        """A new version, its tag ``<shared>-<label>-<pid>``: tests/app with
        ``migrations`` ({name: text}, "{newest}" standing for NEWEST) and ``edit`` done
        to its tree."""
        version = f"{self.shared}-{label}-{os.getpid()}"
        tree = self.root / f"app-{label}"
        shutil.copytree(mediacms.ROOT / "tests" / "app", tree, ignore=IGNORE)
        for name, text in migrations.items():
            (tree / "files" / "migrations" / f"{name}.py").write_text(
                text.replace("{newest}", NEWEST)
            )
        if edit is not None:
            edit(tree)
        self.trees[version] = tree
        return version

    def invoke(self, *args: str, home: Path | None = None) -> subprocess.CompletedProcess:
        """An invoke task of the repository copy, on the stack (or on ``home``)."""
        env = {**self.stack.env(), "PYTHONPATH": str(self.repo)}
        if home is not None:
            env["MEDIACMS_HOME"] = str(home)
        return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(self.repo),
                               *args], env=env, capture_output=True, text=True,
                              check=False)  # fmt: skip

    def build(self, version: str) -> None:
        """The images of ``version``, from a home of their own (the stack's .env is not
        touched)."""
        home = self.root / f"home-{version}"
        home.mkdir()
        shutil.copy(self.stack.settings.env_file, home / ".env")
        config.update(config.load(home), {"MEDIACMS_VERSION": version})
        targets = [word for target in model.PRODUCTION_TARGETS for word in ("--target", target)]
        done = self.invoke("build", "--source", str(self.trees[version]), *targets, home=home)
        if done.returncode != 0:
            raise AssertionError(f"build of {version} failed:\n{done.stdout[-2000:]}"
                                 f"\n{done.stderr[-3000:]}")  # fmt: skip

    def upgrade(self, version: str, *flags: str) -> subprocess.CompletedProcess:
        return self.invoke("upgrade", "--to", version, *flags)

    def from_source(self, version: str) -> tuple[str, ...]:
        """upgrade's flags that build ``version`` from its tree first (layers built
        before are found in the cache)."""
        return ("--build", "--source", str(self.trees[version]))

    def refs(self, version: str) -> list[str]:
        names = model.ImageNames(self.stack.settings.registry, version)
        return [names.ref(target) for target in model.PRODUCTION_TARGETS]

    def remove(self, *versions: str) -> None:
        """Their images, whatever is left of them."""
        refs = [ref for version in versions for ref in self.refs(version)]
        subprocess.run(["docker", "image", "rm", "--force", *refs], capture_output=True,
                       check=False)  # fmt: skip
