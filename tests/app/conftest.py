"""pytest setup of the MediaCMS stand-in test application (run with TESTING=True)."""

import shutil

import pytest


@pytest.fixture
def media_root(settings, tmp_path):
    """Write uploads and task outputs under a temporary MEDIA_ROOT."""
    settings.MEDIA_ROOT = str(tmp_path / "media_files") + "/"
    yield settings.MEDIA_ROOT
    shutil.rmtree(settings.MEDIA_ROOT, ignore_errors=True)
