"""The media: counted in the old folder, copied into the new volume owned by 33 (dotfiles
included), then every file's sha256 and owner checked against the old folder.

Links in the old folder are followed, as the 7.x site followed them: a 7.x deployment
whose ``media_files/original`` links to another disk arrives with that disk's files. A
link that leads nowhere, or back into a folder above it (a loop), or anything that is
neither a file nor a folder, is refused by the plan, before anything is stopped.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from invoke.context import Context

from ...engines.compose import Compose
from ...engines.shell import run
from ...stack.errors import StackError
from ...stack.model import MEDIA_DIR

#: Every media file's digest, computed the same way on the host (links followed: -L) and
#: in the volume (where the copy left no links).
CHECKSUMS = "find {follow} . -type f -print0 | xargs -0 -r sha256sum"
FOREIGN_OWNERS = "find . \\( ! -user 33 -o ! -group 33 \\) -print | head -n 5"
#: Root in the throwaway container may only chown, write into 33's folders and set times.
COPY_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER")


@dataclass
class MediaFolder:
    """What the copy will read under a folder, links followed: file count, bytes, and
    what it cannot copy (each named, with the reason)."""

    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, folder: Path) -> MediaFolder:
        found = cls()
        if folder.is_dir():
            found._walk(folder, "", frozenset({_identity(folder.stat())}))
        return found

    def _walk(self, folder: Path, prefix: str, above: frozenset[tuple[int, int]]) -> None:
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                name = f"{prefix}{entry.name}"
                link = f" -> {os.readlink(entry.path)}" if entry.is_symlink() else ""
                try:
                    info = os.stat(entry.path)  # through links
                except OSError as exc:
                    self.problems.append(f"{name}{link}: {exc.strerror.lower()}")
                    continue
                if stat.S_ISDIR(info.st_mode):
                    if _identity(info) in above:
                        self.problems.append(f"{name}{link}: leads back into a folder above it")
                    else:
                        self._walk(Path(entry.path), f"{name}/", above | {_identity(info)})
                elif stat.S_ISREG(info.st_mode):
                    self.files += 1
                    self.bytes += info.st_size
                else:
                    self.problems.append(f"{name}{link}: neither a file nor a folder")


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


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
    result = run(c, listing, query=True, hide=True, warn=True)
    if result is None or not result.ok:
        raise StackError(f"could not look into the media volume: {result.stderr if result else ''}")
    return result.stdout.strip() == ""


def copy_media_argv(compose: Compose) -> list[str]:
    """The receiving end of the copy: tar extracting its standard input into the media
    volume, in a throwaway web container (root with only COPY_CAPS), owners kept."""
    caps = [arg for cap in COPY_CAPS for arg in ("--cap-add", cap)]
    return compose.argv("run", "--rm", "--no-deps", "-T", "--user", "0:0", *caps,
                        "--entrypoint", "tar", "web", "-C", MEDIA_DIR, "--extract",
                        "--same-owner", "--preserve-permissions", "--file=-")  # fmt: skip


def read_media_argv(source: Path) -> list[str]:
    """The sending end, on this machine: GNU tar of ``source`` with links followed (the
    plan refused loops and broken links) and hard links stored as files (a restore refuses
    links), every entry stamped 33:33 on the way."""
    return ["tar", "-C", str(source), "--create", "--dereference", "--owner=33",
            "--group=33", "--numeric-owner", "--hard-dereference", "--file=-", "."]  # fmt: skip


def copy_media(c: Context, compose: Compose, source: Path) -> float:
    """Copy ``source`` into the media volume, dotfiles included, links followed, owned by
    33. Returns seconds."""
    started = time.monotonic()
    result = run(c, copy_media_argv(compose), pipe_from=read_media_argv(source), warn=True,
                 hide="err")  # fmt: skip
    if result is None or not result.ok:
        raise StackError(f"copying media failed: {(result.stderr if result else '').strip()}")
    return time.monotonic() - started


def verify_media(c: Context, compose: Compose, source: Path) -> int:
    """Every file of ``source`` is in the volume with the same sha256, all owned by 33."""
    # both sides are hashed at the same time: the old folder here, the volume in a container
    here = ["sh", "-c", f'cd "$1" && {CHECKSUMS.format(follow="-L")}', "checksums", str(source)]
    hashing = run(c, here, query=True, hide=True, warn=True, in_stream=False, asynchronous=True)
    script = (
        f"cd {MEDIA_DIR} && {CHECKSUMS.format(follow='')} && echo '--owners--' && {FOREIGN_OWNERS}"
    )
    argv = compose.argv("run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", "web", "-c", script)
    result = run(c, argv, query=True, hide=True, warn=True)
    hashed = hashing.join()
    if not hashed.ok:
        raise StackError(f"could not checksum {source}: {hashed.stderr.strip()[-500:]}")
    local = hashed.stdout
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
