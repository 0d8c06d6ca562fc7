"""The media: counted in the old folder, copied into the new volume owned by 33 (dotfiles
included), then every file's sha256 and owner checked against the old folder."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from invoke.context import Context

from ..compose import Compose
from ..model import MEDIA_DIR
from ..shell import StackError, run

#: Every media file's digest, computed the same way on the host and in the volume.
CHECKSUMS = "find . -type f -print0 | xargs -0 -r sha256sum"
FOREIGN_OWNERS = "find . \\( ! -user 33 -o ! -group 33 \\) -print | head -n 5"
OLD_MEDIA_MOUNT = "/mnt/old-media"
#: Root in the throwaway container may only chown, write into 33's folders and set times.
COPY_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER")


def folder_stats(folder: Path) -> tuple[int, int]:
    """(files, bytes) under ``folder``, dotfiles included."""
    files = size = 0
    if folder.is_dir():
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                files += 1
                size += path.stat().st_size
    return files, size


def parse_checksums(text: str) -> dict[str, str]:
    """``sha256sum`` output -> {relative path: digest}."""
    sums = {}
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if sep:
            sums[name.removeprefix("./")] = digest
    return sums


def media_volume_empty(c: Context, compose: Compose) -> bool:
    listing = compose.argv("run", "--rm", "--no-deps", "-T", "--entrypoint", "find", "web",
                           MEDIA_DIR, "-mindepth", "1", "-print", "-quit")  # fmt: skip
    result = run(c, listing, hide=True, warn=True)
    if result is None or not result.ok:
        raise StackError(f"could not look into the media volume: {result.stderr if result else ''}")
    return result.stdout.strip() == ""


def copy_media_argv(compose: Compose, source: Path) -> list[str]:
    """tar | tar inside one throwaway web container: the old folder mounted read-only,
    the archive stamped 33:33 on the way, so no second pass over the files is needed."""
    pipeline = (
        f"tar -C {OLD_MEDIA_MOUNT} --create --owner=33 --group=33 --numeric-owner --file=- . "
        f"| tar -C {MEDIA_DIR} --extract --same-owner --preserve-permissions --file=-"
    )
    caps = [arg for cap in COPY_CAPS for arg in ("--cap-add", cap)]
    return compose.argv("run", "--rm", "--no-deps", "-T", "--user", "0:0", *caps,
                        "--volume", f"{source}:{OLD_MEDIA_MOUNT}:ro", "--entrypoint", "bash",
                        "web", "-o", "pipefail", "-c", pipeline)  # fmt: skip


def copy_media(c: Context, compose: Compose, source: Path) -> float:
    """Copy ``source`` into the media volume, dotfiles included, owned by 33. Returns seconds."""
    started = time.monotonic()
    result = run(c, copy_media_argv(compose, source), warn=True, hide="err")
    if result is None or not result.ok:
        raise StackError(f"copying media failed: {(result.stderr if result else '').strip()}")
    return time.monotonic() - started


def verify_media(c: Context, compose: Compose, source: Path) -> int:
    """Every file of ``source`` is in the volume with the same sha256, all owned by 33."""
    # both sides are hashed at the same time: the old folder here, the volume in a container
    hashing = subprocess.Popen(["sh", "-c", CHECKSUMS], cwd=source, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    script = f"cd {MEDIA_DIR} && {CHECKSUMS} && echo '--owners--' && {FOREIGN_OWNERS}"
    argv = compose.argv("run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", "web", "-c", script)
    result = run(c, argv, hide=True, warn=True)
    local, errors = hashing.communicate()
    if hashing.returncode != 0:
        raise StackError(f"could not checksum {source}: {errors.strip()[-500:]}")
    if result is None or not result.ok:
        raise StackError(f"could not checksum the media volume: {result.stderr if result else ''}")
    sums, _, foreign = result.stdout.partition("--owners--")
    expected, actual = parse_checksums(local), parse_checksums(sums)
    missing = sorted(set(expected) - set(actual))
    differ = sorted(p for p in expected if p in actual and actual[p] != expected[p])
    if missing or differ:
        raise StackError(
            f"media differ after the copy: missing {missing[:5]}, changed {differ[:5]}"
        )
    if foreign.strip():
        raise StackError(f"media files not owned by 33:33 in the volume: {foreign.split()}")
    return len(expected)
