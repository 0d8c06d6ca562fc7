"""Restores replace the media, never merge; a bad archive changes nothing."""

from __future__ import annotations

import hashlib
import shlex

import pytest

pytestmark = pytest.mark.e2e

MEDIA = "/home/mediacms.io/mediacms/media_files"


def media_files(stack) -> list[str]:
    """Every folder and file of the media volume, files with their sha256 (dotfiles too)."""
    script = (f"cd {MEDIA} && {{ find . -mindepth 1 -type d -printf 'folder %p\\n'; "
              "find . -type f -exec sha256sum {} +; } | sort")  # fmt: skip
    return stack.dc("exec", "-T", "web", "sh", "-c", script).stdout.splitlines()


def only_new(before: set, folder) -> object:
    [archive] = [p for p in folder.glob("mediacms-media-*.tar.gz") if p not in before]
    return archive


def backup_media(stack, folder):
    before = set(folder.glob("mediacms-media-*.tar.gz"))
    stack.invoke("backup-media", "--dest", str(folder))
    return only_new(before, folder)


def test_restore_media_replaces_the_volume_and_a_corrupt_archive_changes_nothing(stack, tmp_path):
    original = backup_media(stack, tmp_path)
    try:
        names = " ".join(f"original/b{n}.txt" for n in range(12))
        stack.dc("exec", "-T", "web", "sh", "-c",
                 f"cd {MEDIA} && find . -mindepth 1 -delete && mkdir original && "
                 f"for f in {names}; do echo \"$f\" > \"$f\"; done && echo dot > .dot")  # fmt: skip
        thirteen = media_files(stack)
        assert len(thirteen) == 14  # 13 files and original/
        archive = backup_media(stack, tmp_path)
        stack.dc("exec", "-T", "web", "sh", "-c",
                 f"cd {MEDIA} && mkdir later && for n in 1 2 3 4 5 6 7; do "
                 "echo $n > later/x$n.txt; done && echo changed > original/b0.txt")  # fmt: skip

        refused = stack.invoke("restore-media", str(archive), check=False)
        assert refused.returncode == 1 and "--yes" in refused.stderr
        after_extra = media_files(stack)
        assert len(after_extra) == len(thirteen) + 8  # later/ and its 7 files

        corrupt = tmp_path / "corrupt.tar.gz"
        data = bytearray(archive.read_bytes())
        data[len(data) // 2] ^= 0xFF
        corrupt.write_bytes(bytes(data))
        (tmp_path / "corrupt.tar.gz.sha256").write_text(
            f"{hashlib.sha256(bytes(data)).hexdigest()}  corrupt.tar.gz\n"
        )
        bad = stack.invoke("restore-media", str(corrupt), "--yes", check=False)
        assert bad.returncode == 1 and "nothing was touched" in bad.stderr, bad.stderr
        assert media_files(stack) == after_extra

        stack.invoke("restore-media", str(archive), "--yes")
        assert media_files(stack) == thirteen  # exactly the backup's files, b0 as it was
        ps = stack.dc("ps", "--format", "{{.Service}} {{.Health}}").stdout
        assert "web healthy" in ps and "nginx healthy" in ps
    finally:
        stack.invoke("restore-media", str(original), "--yes")


def test_full_restore_replaces_media_and_custom(stack, tmp_path):
    before = media_files(stack)
    custom = stack.home / "custom"
    stack.invoke("backup", "--dest", str(tmp_path))
    [folder] = tmp_path.glob("mediacms-*")
    stack.dc("exec", "-T", "web", "sh", "-c", f"echo extra > {MEDIA}/extra-after-backup.txt")
    (custom / "extra.css").write_text("body{}")
    dry = stack.invoke("restore", str(folder), "--yes", "--dry-run")
    assert "nothing was changed" in dry.stdout and (custom / "extra.css").exists()
    assert any("extra-after-backup" in line for line in media_files(stack))
    stack.invoke("restore", str(folder), "--yes")
    assert media_files(stack) == before
    assert not (custom / "extra.css").exists()
    leftovers = stack.dc("exec", "-T", "web", "sh", "-c",
                         f"ls -A {shlex.quote(MEDIA)} | grep -c mediacms-restore || true").stdout  # fmt: skip
    assert leftovers.strip() == "0"
