"""The stand-in's /api/v1/whoami answers as MediaCMS's does: nginx asks it before an
upload's body is read (2xx: go on; 401/403: refused)."""

import base64

import pytest
from users.models import User


def basic(name, password):
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


@pytest.mark.django_db
def test_whoami_names_the_session_or_basic_user_and_refuses_the_rest(client):
    User.objects.create_user("alice", password="a")
    assert client.get("/api/v1/whoami").status_code == 403
    assert client.get("/api/v1/whoami", HTTP_AUTHORIZATION=basic("alice", "no")).status_code == 403
    answer = client.get("/api/v1/whoami", HTTP_AUTHORIZATION=basic("alice", "a"))
    assert answer.status_code == 200 and answer.json()["username"] == "alice"
    client.force_login(User.objects.get(username="alice"))
    assert client.get("/api/v1/whoami").json()["username"] == "alice"


@pytest.mark.django_db
def test_a_user_of_the_no_uploads_group_may_not_upload(client):
    from django.contrib.auth.models import Group
    from django.core.files.uploadedfile import SimpleUploadedFile
    from files.methods import NO_UPLOADS

    bob = User.objects.create_user("bob", password="b")
    bob.groups.add(Group.objects.create(name=NO_UPLOADS))
    clip = SimpleUploadedFile("clip.mp4", b"\0" * 16)
    refused = client.post("/api/v1/media", {"title": "t", "media_file": clip},
                          HTTP_AUTHORIZATION=basic("bob", "b"))  # fmt: skip
    assert refused.status_code == 403
    assert client.get("/api/v1/whoami", HTTP_AUTHORIZATION=basic("bob", "b")).status_code == 200
