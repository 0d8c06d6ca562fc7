"""Driving a real MediaCMS through nginx, as a browser or an API client does."""

from __future__ import annotations

import hashlib
import re
import time
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import requests

#: long enough to seek into, mid-file (a browser's range request); each second of it is
#: transcoded into every rendition, twice per tree (the upload tests)
CLIP_SECONDS = 12


class _Assets(HTMLParser):
    """Static assets a page references (scripts, stylesheets, images, icons)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for key in ("src", "href"):
            value = found.get(key) or ""
            if tag in ("script", "img", "link") and value.startswith(("/static/", "/media/")):
                self.urls.add(value)


def assets(html: str) -> set[str]:
    parser = _Assets()
    parser.feed(html)
    return parser.urls


def login(stack, username: str, password: str, *, form: str = "/admin/login/") -> requests.Session:
    """An HTML login form, CSRF token and Referer included, like a browser: the admin's
    (`/admin/login/`, staff only) or the site's (`/accounts/login/`, django-allauth)."""
    session = requests.Session()
    page = session.get(stack.url(form), timeout=20)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
    field = "username" if form.startswith("/admin/") else "login"
    session.post(
        stack.url(form),
        data={"csrfmiddlewaretoken": token, field: username, "password": password},
        headers={"Referer": stack.url(form)},
        timeout=20,
    )
    return session


def whoami(session_or_auth, stack) -> dict:
    kwargs = (
        {"auth": session_or_auth} if isinstance(session_or_auth, requests.auth.AuthBase) else {}
    )
    getter = session_or_auth.get if isinstance(session_or_auth, requests.Session) else requests.get
    response = getter(stack.url("/api/v1/whoami"), timeout=20, **kwargs)
    assert response.status_code == 200, response.text[:300]
    return response.json()


def make_clip(stack, seconds: int = CLIP_SECONDS) -> bytes:
    """A 720p H.264 + AAC clip, made by the web image's own ffmpeg."""
    script = (
        f"ffmpeg -loglevel error -f lavfi -i testsrc2=duration={seconds}:size=1280x720:rate=25 "
        f"-f lavfi -i sine=frequency=440:duration={seconds} -c:v libx264 -preset veryfast "
        "-pix_fmt yuv420p -c:a aac -shortest -movflags +faststart /tmp/clip.mp4 "
        "&& cat /tmp/clip.mp4 && rm /tmp/clip.mp4"
    )
    done = stack.dc("exec", "-T", "web", "sh", "-c", script, text=False)
    assert done.stdout[4:8] == b"ftyp", done.stderr[-500:]
    return done.stdout


def make_image(stack) -> bytes:
    script = "convert -size 640x480 plasma:fractal /tmp/i.jpg && cat /tmp/i.jpg && rm /tmp/i.jpg"
    done = stack.dc("exec", "-T", "web", "sh", "-c", script, text=False)
    assert done.stdout[:3] == b"\xff\xd8\xff", done.stderr[-500:]
    return done.stdout


def media_state(stack, token: str) -> dict:
    response = requests.get(stack.url(f"/api/v1/media/{token}"), timeout=20)
    assert response.status_code == 200, response.text[:300]
    return response.json()


def token_of(url: str) -> str:
    return re.search(r"[?&]m=([\w-]+)", url)[1]


def wait_ready(stack, token: str, timeout: float = 900, *, extras: bool = True,
               poll: float = 3) -> dict:  # fmt: skip
    """Until every rendition is done, and with ``extras`` the thumbnail, poster and
    sprites too (or one failed); asked every ``poll`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        state = media_state(stack, token)
        renditions = [
            enc
            for profiles in (state.get("encodings_info") or {}).values()
            for enc in profiles.values()
            if enc
        ]
        done = state["encoding_status"] in ("success", "fail") and all(
            enc.get("status") in ("success", "fail") for enc in renditions
        )
        pictures = state["thumbnail_url"] and state["poster_url"] and state["sprites_url"]
        if state["encoding_status"] == "fail" or (done and (pictures or not extras)):
            return state
        assert time.monotonic() < deadline, f"media {token} not ready after {timeout}s: {state}"
        time.sleep(poll)


def assert_served(stack, url: str, session: requests.Session | None = None) -> bytes:
    getter = (session or requests).get
    response = getter(urljoin(stack.base, urlsplit(url).path), timeout=60)
    assert response.status_code == 200, (url, response.status_code)
    return response.content


def media_digest(stack) -> str:
    """sha256 of every file in the media volume, path by path, in one listing."""
    listing = stack.dc(
        "exec", "-T", "web", "sh", "-c",
        "cd media_files && find . -type f ! -path './chunks/*' -print0 | sort -z | "
        "xargs -0 -r sha256sum",
    ).stdout  # fmt: skip
    assert listing.strip()
    return hashlib.sha256(listing.encode()).hexdigest()


def set_state(stack, token: str, state: str) -> None:
    """As the owner's edit form does, through the model's save(); then the media-auth
    view's cached decisions (upstream keeps them X_ACCEL_AUTH_CACHE_SECONDS, 300 s) go,
    and nginx's (MEDIA_GATE_CACHE_SECONDS) are waited out."""
    script = (
        "from django.core.cache import cache; from files.models import Media; "
        f"m = Media.objects.get(friendly_token='{token}'); m.state = '{state}'; m.save(); "
        "cache.delete_pattern('xaccel:*')"
    )
    stack.dc("exec", "-T", "web", "python", "manage.py", "shell", "-c", script)
    time.sleep(float(stack.settings.get("MEDIA_GATE_CACHE_SECONDS", "10")))
