"""Files on the host that hold secrets or come from elsewhere.

What the project writes (.env, backups, checksums, manifests) is readable by its owner
only and replaces the previous version atomically; what the containers read as another
user (custom/local_settings.py) is replaced as atomically, with a plain write's mode.
What a restore reads from an archive is trusted for nothing: :func:`check_tar` refuses,
before anything is extracted, any entry that is not a regular file or a folder inside
the target.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from .errors import StackError

FILE_MODE = 0o600
DIR_MODE = 0o700


@contextmanager
def private_writer(path: Path, mode: str = "w", *, file_mode: int = FILE_MODE) -> Iterator[IO]:
    """Open a temp file beside ``path``; on success it replaces ``path``, with
    ``file_mode`` (600 unless told otherwise).

    A reader sees the old file or the whole new one, never a part; on an error the
    temp file goes and ``path`` is untouched.
    """
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, file_mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_private(path: Path, text: str) -> None:
    with private_writer(path) as handle:
        handle.write(text)


def write_shared(path: Path, text: str) -> None:
    """Replace ``path`` as atomically as :func:`write_private`, but with the mode a plain
    write leaves: the replaced file's, or for a new one 666 less the umask. A link keeps
    pointing at the file it names, which is the one replaced."""
    path = path.resolve()
    umask = os.umask(0o077)
    os.umask(umask)
    file_mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o666 & ~umask
    with private_writer(path, file_mode=file_mode) as handle:
        handle.write(text)


def copy_private(source: Path, target: Path) -> None:
    with source.open("rb") as reader, private_writer(target, "wb") as writer:
        shutil.copyfileobj(reader, writer)


def private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Create ``path`` and its missing parents with mode 700; ``tighten`` also makes an
    existing ``path`` 700 (for folders the project owns, such as ``backups/``)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=DIR_MODE)
        folder.chmod(DIR_MODE)  # mkdir's mode is filtered by the umask
    if tighten and path.stat().st_mode & 0o077:
        path.chmod(DIR_MODE)
    return path


def refusal(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` may not be restored, or None when it is a plain file or folder."""
    if not (member.isreg() or member.isdir()):
        kinds = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link",
                 tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
                 tarfile.FIFOTYPE: "a FIFO"}  # fmt: skip
        target = f" to {member.linkname}" if member.issym() or member.islnk() else ""
        return f"is {kinds.get(member.type, f'of tar type {member.type!r}')}{target}"
    special = member.mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)
    if special:
        names = [n for bit, n in ((stat.S_ISUID, "setuid"), (stat.S_ISGID, "setgid"),
                                  (stat.S_ISVTX, "sticky")) if special & bit]  # fmt: skip
        return f"has the {'/'.join(names)} bit (mode {member.mode:o})"
    name = member.name
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        return "has an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "has a .. component"
    if "\\" in name or "\0" in name:
        return "has a backslash or NUL in its name"
    return None


def check_tar(archive: Path) -> int:
    """Read every entry of a .tar.gz and refuse the whole archive at the first that is
    not a regular file or folder inside the target; returns the entry count.

    Streams the archive once (any size) to its very end, where gzip's CRC and length
    are checked: a truncated or corrupt archive is refused here too, before anything
    was extracted.
    """
    count = 0
    try:
        with gzip.open(archive, "rb") as stream:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    why = refusal(member)
                    if why:
                        raise StackError(f"{archive}: entry {member.name!r} {why}; only regular "
                                         "files and folders are restored, nothing was touched")  # fmt: skip
                    count += 1
            while stream.read(1 << 20):
                pass
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise StackError(f"{archive} is not a readable .tar.gz ({error}); nothing was "
                         "touched") from error  # fmt: skip
    return count


def tar_checksums(archive: Path) -> dict[str, str]:
    """sha256 of every regular file in a .tar.gz, by its path inside the archive (``./``
    dropped), read in one pass: what a restore of the archive puts in its target."""
    sums = {}
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for member in tar:
                if not member.isreg():
                    continue
                digest = hashlib.sha256()
                reader = tar.extractfile(member)
                while reader is not None and (chunk := reader.read(1 << 20)):
                    digest.update(chunk)
                sums[str(PurePosixPath(member.name))] = digest.hexdigest()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise StackError(f"{archive} is not a readable .tar.gz ({error})") from error
    return sums
