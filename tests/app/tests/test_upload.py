"""Upload through the API; with TESTING=True Celery runs the ffmpeg tasks eagerly."""

import base64
import json
import os
import subprocess

import pytest
from django.conf import settings
from django.core.management import call_command
from users.models import User

FIXTURES = os.path.join(settings.BASE_DIR, "fixtures")


def basic(username, password):
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def make_clip(path):
    """A 2 s 320x240 clip with sound, made by ffmpeg's test sources."""
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=10:duration=2",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=2",
            "-shortest",
            "-c:v",
            "mpeg4",
            "-c:a",
            "aac",
            str(path),
        ],
        check=True,
    )


@pytest.mark.django_db
def test_upload_requires_auth(client, media_root):
    response = client.post("/api/v1/media", {"title": "x"})
    assert response.status_code == 401
    User.objects.create_user("bob", password="right")
    auth = basic("bob", "wrong")
    response = client.post("/api/v1/media", {"title": "x"}, HTTP_AUTHORIZATION=auth)
    assert response.status_code == 401
    assert response.json() == {"detail": "authentication required"}


@pytest.mark.django_db
def test_upload_encodes_and_thumbnails(
    client, media_root, tmp_path, django_capture_on_commit_callbacks
):
    call_command("loaddata", os.path.join(FIXTURES, "encoding_profiles.json"), verbosity=0)
    call_command("loaddata", os.path.join(FIXTURES, "categories.json"), verbosity=0)
    User.objects.create_user("alice", password="secret")
    clip = tmp_path / "clip.mp4"
    make_clip(clip)
    with django_capture_on_commit_callbacks(execute=True), open(clip, "rb") as fh:
        response = client.post(
            "/api/v1/media",
            {"title": "Clip", "media_file": fh},
            HTTP_AUTHORIZATION=basic("alice", "secret"),
        )
    assert response.status_code == 201, response.content
    media_id = response.json()["id"]

    data = client.get(f"/api/v1/media/{media_id}").json()
    uid = data["uid"]  # in every protected file's path, as in MediaCMS
    assert data["encoding_status"] == "success"
    assert data["duration"] == pytest.approx(2, abs=0.2)
    assert data["original_url"] == f"/media/original/user/alice/{uid}.clip.mp4"
    assert data["encoded_url"] == f"/media/encoded/{uid}_144p.mp4"
    assert data["thumbnail_url"] == f"/media/original/thumbnails/{uid}.jpg"

    encoded = os.path.join(media_root, "encoded", f"{uid}_144p.mp4")
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", encoded],
        capture_output=True,
        check=True,
    ).stdout
    streams = {s["codec_type"]: s for s in json.loads(probe)["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["video"]["height"] == 144
    assert streams["audio"]["codec_name"] == "aac"
    assert os.path.isfile(os.path.join(media_root, "original", "thumbnails", f"{uid}.jpg"))
