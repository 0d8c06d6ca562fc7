"""backup-verify's own rules: the throwaway's name, the folder, what differs in media."""

import hashlib
import io
import tarfile

import pytest

from mediacms_stack.procedures import verify
from mediacms_stack.stack import config, files
from mediacms_stack.stack.errors import StackError


def settings(tmp_path, **values):
    return config.Settings(tmp_path, values, tmp_path / ".env")


def test_the_throwaway_is_named_after_the_live_stack_unless_told(tmp_path):
    assert verify.throwaway_name(settings(tmp_path, COMPOSE_PROJECT_NAME="shop"), None) == (
        "shop-verify"
    )
    assert verify.throwaway_name(settings(tmp_path), "trial_1") == "trial_1"
    for bad in ("Trial", "-x", "a b", "a;rm"):
        with pytest.raises(StackError, match="compose project name"):
            verify.throwaway_name(settings(tmp_path), bad)


def test_the_folder_is_given_or_the_projects_newest(tmp_path):
    with pytest.raises(StackError, match="is not a folder"):
        verify.pick_folder(str(tmp_path / "absent"), tmp_path, "p")
    with pytest.raises(StackError, match="no full backup of p"):
        verify.pick_folder(None, tmp_path, "p")
    for name, project in (("mediacms-20260101T000000Z", "p"), ("mediacms-20260102T000000Z", "q")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(
            f'{{"project": "{project}", "created_utc": "2026-01-01T00:00:00+00:00"}}'
        )
    assert verify.pick_folder(None, tmp_path, "p").name == "mediacms-20260101T000000Z"


def test_media_differences_are_named_by_kind():
    recorded = {"a": "1", "b": "2", "c": "3"}
    assert verify.compare_media(recorded, dict(recorded)) == []
    assert verify.compare_media(recorded, {"a": "1", "b": "x", "d": "4"}) == [
        "1 file(s) missing: c",
        "1 file(s) with another checksum: b",
        "1 file(s) not in the backup: d",
    ]
    many = {f"f{n}": "0" for n in range(7)}
    assert verify.compare_media(many, {}) == ["7 file(s) missing: f0, f1, f2, f3, f4, ..."]


def test_an_archive_checksums_are_its_files_by_path(tmp_path):
    archive = tmp_path / "m.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        folder = tarfile.TarInfo("./original")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        member = tarfile.TarInfo("./original/a.mp4")
        member.size = 5
        tar.addfile(member, io.BytesIO(b"video"))
    assert files.tar_checksums(archive) == {"original/a.mp4": hashlib.sha256(b"video").hexdigest()}
    (tmp_path / "bad.tar.gz").write_bytes(b"\x1f\x8bnot really")
    with pytest.raises(StackError, match="not a readable"):
        files.tar_checksums(tmp_path / "bad.tar.gz")
