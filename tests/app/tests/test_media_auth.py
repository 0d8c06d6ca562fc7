"""The stand-in's media-auth endpoint honours MediaCMS 8.3's contract with nginx."""

import base64

import pytest
from files.models import Media
from users.models import User


@pytest.fixture
def people(db):
    alice = User.objects.create_user("alice", password="a")
    bob = User.objects.create_user("bob", password="b")
    staff = User.objects.create_user("staff", password="s", is_staff=True)
    return alice, bob, staff


def media_of(owner, state):
    return Media.objects.create(title=state, user=owner, state=state, media_file="x.mp4")


def ask(client, uri):
    return client.get("/api/v1/media-auth", HTTP_X_ORIGINAL_URI=uri).status_code


@pytest.mark.django_db
def test_private_media_for_owner_and_staff_only(client, people):
    alice, bob, staff = people
    private = media_of(alice, "private")
    uri = f"/media/original/user/alice/{private.uid.hex}.x.mp4"
    assert ask(client, uri) == 403
    for user, status in ((bob, 403), (alice, 204), (staff, 204)):
        client.force_login(user)
        assert ask(client, uri) == status, user
        client.logout()


@pytest.mark.django_db
def test_public_and_unlisted_open_unknown_or_missing_uid_refused(client, people):
    alice = people[0]
    for state in ("public", "unlisted"):
        assert ask(client, f"/media/encoded/{media_of(alice, state).uid.hex}_240p.mp4") == 204
    assert ask(client, "/media/original/user/alice/" + "0" * 32 + ".x.mp4") == 403
    assert ask(client, "/media/original/user/alice/x.mp4") == 403
    assert ask(client, "") == 403
    public = media_of(alice, "public").uid.hex
    assert ask(client, f"/media/original/../{public}.x.mp4") == 403


@pytest.mark.django_db
def test_login_starts_a_session(client, people):
    token = base64.b64encode(b"alice:a").decode()
    response = client.post("/api/v1/login", HTTP_AUTHORIZATION=f"Basic {token}")
    assert response.status_code == 200 and "sessionid" in response.cookies
    assert client.post("/api/v1/login").status_code == 401


@pytest.mark.django_db
def test_logout_ends_the_session(client, people):
    private = media_of(people[0], "private")
    uri = f"/media/original/user/alice/{private.uid.hex}.x.mp4"
    client.force_login(people[0])
    assert ask(client, uri) == 204
    assert client.post("/api/v1/logout").status_code == 204
    assert ask(client, uri) == 403
