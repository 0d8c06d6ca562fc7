"""Pinned Python dependencies for a MediaCMS tree: one lock per set of requirement files.

A tree's requirements (``requirements.txt`` and ``requirements-dev.txt``) name direct
dependencies, some loosely (python3-saml pulls lxml unpinned), so the same tree built
on another day resolves differently. Each set is therefore resolved once, inside the
image's own builder (Python and pins as the build has them), into
``constraints/mediacms/<name>.txt``; the build applies it as PIP_CONSTRAINT. A lock is
found by the SHA-256 of the requirement files it was resolved from, written in its
first line, so an edited tree never reuses a stale lock.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from invoke.context import Context

from ..engines import engine
from ..engines.shell import dry, run, say
from ..stack.config import ROOT, Settings

LOCK_DIR = Path("constraints") / "mediacms"
#: Where `invoke build` stages each version's inputs inside the build context.
STAGE_ROOT = Path(".build") / "stage"
REQUIREMENT_FILES = ("requirements.txt", "requirements-dev.txt")
_HEADER = re.compile(r"^# requirements-sha256: ([0-9a-f]{64})$", re.M)


def key(tree: Path) -> str:
    """SHA-256 over the names and contents of the tree's requirement files."""
    digest = hashlib.sha256()
    for name in REQUIREMENT_FILES:
        path = tree / name
        if path.is_file():
            digest.update(f"{name}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()


def find(tree: Path, root: Path = ROOT) -> Path | None:
    """The lock resolved from exactly this tree's requirement files, if there is one."""
    wanted = key(tree)
    for lock in sorted((root / LOCK_DIR).glob("*.txt")):
        found = _HEADER.search(lock.read_text())
        if found and found[1] == wanted:
            return lock
    return None


def safe_name(settings: Settings) -> str:
    """The MediaCMS version, made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", settings.version)


def lock_name(settings: Settings) -> str:
    """File name of a new lock."""
    return safe_name(settings) + ".txt"


@dataclass(frozen=True)
class Stage:
    """One version's build inputs in the build context (paths relative to it): the tree in
    ``mediacms/`` and its lock in ``lock.txt``. One folder per version, so builds of
    different versions run side by side; builds of one version take turns (``.lock``)."""

    folder: Path

    @classmethod
    def of(cls, settings: Settings) -> Stage:
        return cls(STAGE_ROOT / safe_name(settings))

    @property
    def tree(self) -> Path:
        return self.folder / "mediacms"

    @property
    def lock(self) -> Path:
        return self.folder / "lock.txt"


def resolve_argv(
    builder: engine.Builder, settings: Settings, out: Path, ca_bundle: str
) -> list[str]:
    """The BuildKit command that resolves the staged tree's requirements (target ``lock``)."""
    argv = ["--file", "Dockerfile", "--target", "lock", "--output", f"type=local,dest={out}",
            "--build-arg", f"BASE_IMAGE={settings.get('BASE_IMAGE', 'debian:trixie-slim')}",
            "--build-arg", f"MEDIACMS_SRC={Stage.of(settings).tree.as_posix()}"]  # fmt: skip
    if ca_bundle:
        argv += ["--secret", f"id=ca_bundle,src={ca_bundle}"]
    return builder.command(*argv, ".")


def resolve(c: Context, settings: Settings, tree: Path, *, ca_bundle: str = "") -> Path:
    """Resolve the staged tree's requirements into constraints/mediacms/ and show the diff
    against the lock it replaces (same name). Returns the lock's path."""
    target = ROOT / LOCK_DIR / lock_name(settings)
    builder = engine.builder(c)
    if dry(c):
        run(c, resolve_argv(builder, settings, STAGE_ROOT / "resolved", ca_bundle))
        return target
    (ROOT / STAGE_ROOT).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / STAGE_ROOT) as out:
        with c.cd(str(ROOT)):
            run(c, resolve_argv(builder, settings, Path(out), ca_bundle), env=dict(builder.env))
        pins = (Path(out) / "constraints.txt").read_text()
    text = (f"# requirements-sha256: {key(tree)}\n"
            f"# Resolved by `invoke lock` from MediaCMS {settings.version}'s "
            f"{' and '.join(n for n in REQUIREMENT_FILES if (tree / n).is_file())}.\n{pins}")  # fmt: skip
    old = target.read_text().splitlines(keepends=True) if target.exists() else []
    diff = "".join(difflib.unified_diff(old, text.splitlines(keepends=True),
                                        str(target.relative_to(ROOT)), "resolved"))  # fmt: skip
    if diff:
        print(diff)
    else:
        say(f"{target.relative_to(ROOT)}: unchanged")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def stage(c: Context, settings: Settings, tree: Path, *, ca_bundle: str = "") -> Path | None:
    """Put the tree's lock where the Dockerfile reads it (the version's stage); a tree without one is resolved
    first (and the new lock is kept in constraints/mediacms/ for the next build)."""
    if not (tree / "requirements.txt").is_file():  # a git source in a dry run: not cloned
        print(f"(dry run) would use the lock in {LOCK_DIR}/ of the cloned tree's requirements")
        return None
    lock = find(tree)
    if lock is None:
        say(f"no lock in {LOCK_DIR}/ for this tree's requirements "
            f"(sha256 {key(tree)[:12]}): resolving one")  # fmt: skip
        lock = resolve(c, settings, tree, ca_bundle=ca_bundle)
    else:
        say(f"pinned by {lock.relative_to(ROOT)}")
    if not dry(c):
        shutil.copyfile(lock, ROOT / Stage.of(settings).lock)
    return lock
