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
