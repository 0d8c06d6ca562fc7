"""Tests of the test application's pages and read-only API."""

import pytest


def test_home_shows_portal_name(client, settings):
    settings.PORTAL_NAME = "Portal Under Test"
    html = client.get("/").content.decode()
    assert "<title>Portal Under Test</title>" in html
    assert "<h1>Portal Under Test</h1>" in html
    assert 'href="/static/css/app.css"' in html
    assert 'src="/static/js/app.js"' in html
    assert 'href="/custom/static/css/custom.css"' in html


def test_config_api(client, settings):
    data = client.get("/api/v1/config").json()
    assert data == {
        "portal_name": settings.PORTAL_NAME,
        "frontend_host": settings.FRONTEND_HOST,
        "debug": settings.DEBUG,
    }


@pytest.mark.django_db
def test_health(client):
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
