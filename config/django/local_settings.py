"""Settings bridge: the container's environment as Django settings.

The image installs this file as ``cms/local_settings.py`` and sets
``DJANGO_SETTINGS_MODULE=cms.container_settings`` (config/django/container_settings.py),
which makes every kind of tree load it at the point where the tree expects its local
overrides:

- released trees (7.x, 8.x) end ``cms/settings.py`` with ``from .local_settings import *``;
- the 7.3 restructure tree does ``from custom.local_settings import *`` instead;
- a tree with neither hook gets these settings applied after ``cms.settings``.

Order: the environment first, then ``custom/local_settings.py`` (the operator's file,
mounted read-only from ./custom) is executed here, so the operator's overrides win.
Every value ``X`` may come from a file named by ``X_FILE`` (Docker and Swarm secrets).
Nothing secret is stored in this file.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit


def _env(name, default=None):
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _env_bool(name, default=False):
    value = _env(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _env_list(name):
    return [item.strip() for item in (_env(name) or "").split(",") if item.strip()]


# Trees read SECRET_KEY from the environment in their own settings, before any hook
# (container_settings.py imports this module first): a key handed in as a file
# (SECRET_KEY_FILE, a Swarm secret) is put there for them.
if os.environ.get("SECRET_KEY_FILE") and not os.environ.get("SECRET_KEY"):
    os.environ["SECRET_KEY"] = _env("SECRET_KEY")

# The tree's own hook found this module (see container_settings.py).
MEDIACMS_CONTAINER_BRIDGE = True

if _env("SECRET_KEY"):
    SECRET_KEY = _env("SECRET_KEY")

FRONTEND_HOST = _env("FRONTEND_HOST", "http://localhost").rstrip("/")
PORTAL_NAME = _env("PORTAL_NAME", "MediaCMS")
DEBUG = _env_bool("DEBUG", False) or _env_bool("DEVELOPMENT_MODE", False)

# Only the public name (and an optional list) reaches Django: no "*", so a forged Host
# cannot end up in password-reset links. nginx refuses other names before they get here.
_frontend_name = urlsplit(FRONTEND_HOST).hostname or "localhost"
ALLOWED_HOSTS = [_frontend_name, *_env_list("ALLOWED_HOSTS")]
if DEBUG:
    ALLOWED_HOSTS += ["localhost", "127.0.0.1", "[::1]"]
CSRF_TRUSTED_ORIGINS = [
    origin
    for origin in [FRONTEND_HOST, *_env_list("CSRF_TRUSTED_ORIGINS")]
    if origin.startswith(("http://", "https://"))
]
# nginx always sets X-Forwarded-Proto itself (the client's own is never passed on):
# the scheme the visitor used, or the HTTPS proxy's when behind the HTTPS overlay.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = False
if FRONTEND_HOST.startswith("https://"):
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _env("POSTGRES_NAME", _env("POSTGRES_DB", "mediacms")),
        "HOST": _env("POSTGRES_HOST", "db"),
        "PORT": _env("POSTGRES_PORT", "5432"),
        "USER": _env("POSTGRES_USER", "mediacms"),
        "PASSWORD": _env("POSTGRES_PASSWORD", ""),
        "CONN_MAX_AGE": int(_env("POSTGRES_CONN_MAX_AGE", "60")),
        # A connection broken by a database restart is replaced on the next request
        # instead of answering 500 until the worker recycles it.
        "CONN_HEALTH_CHECKS": True,
    }
}

REDIS_LOCATION = _env("REDIS_LOCATION", "redis://redis:6379/1")


def _on_host(location, host):
    """REDIS_LOCATION (password, database) pointed at another Redis server."""
    parts = urlsplit(location)
    auth = parts.netloc.rpartition("@")[0]
    return parts._replace(netloc=f"{auth}@{host}" if auth else host).geturl()


# Two Redis servers (docker-compose.yaml, docker-stack.yaml): REDIS_LOCATION keeps what
# must never be evicted, the Celery broker and the sessions (the tree's cache-backed
# sessions, under the same keys as before, so nobody is logged out and migrate-from-7x's
# carried sessions stay valid); REDIS_CACHE_HOST (same password and database) is the
# cache, bounded and evicting its least recently used keys. Without it, one server.
_cache_host = _env("REDIS_CACHE_HOST")
_redis = {
    "BACKEND": "django_redis.cache.RedisCache",
    "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
}
_cache = _on_host(REDIS_LOCATION, _cache_host) if _cache_host else REDIS_LOCATION
CACHES = {
    "default": {**_redis, "LOCATION": _cache},
    "sessions": {**_redis, "LOCATION": REDIS_LOCATION},
}
SESSION_CACHE_ALIAS = "sessions"
# Both spellings: older trees read BROKER_URL, newer ones CELERY_BROKER_URL.
BROKER_URL = CELERY_BROKER_URL = REDIS_LOCATION
CELERY_RESULT_BACKEND = REDIS_LOCATION
# beat writes its schedule store after every task it sends (not every 180 s), so its
# health check can tell a stuck beat within --max-interval plus a small margin.
CELERYBEAT_SYNC_EVERY = CELERY_BEAT_SYNC_EVERY = 1

# Transcoding, thumbnails and large uploads write here: a disk volume in the compose
# file, so long videos are not encoded into a RAM-backed /tmp.
TEMP_DIRECTORY = FILE_UPLOAD_TEMP_DIR = _env("TEMP_DIRECTORY", "/tmp")  # noqa: S108 - upstream default

_custom = Path(__file__).resolve().parent.parent / "custom" / "local_settings.py"
if _custom.is_file():
    exec(compile(_custom.read_text(), str(_custom), "exec"))  # noqa: S102 - operator's own file
