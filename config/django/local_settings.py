"""Settings bridge, installed by the image as ``cms/local_settings.py``.

Every released MediaCMS ``cms/settings.py`` ends by importing ``cms.local_settings``.
This module fills that slot so any released tree runs in containers unchanged:

1. it reads the container's environment (database, Redis, secret key, host names);
2. then, when present, it executes ``custom/local_settings.py`` (mounted read-only
   from the operator's ``./custom`` folder), so operator overrides win.

Nothing secret is stored here: all of it comes from the environment at run time.
"""

import os
from pathlib import Path


def _env(name, default=None):
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _env_bool(name, default=False):
    value = _env(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


if _env("SECRET_KEY"):
    SECRET_KEY = _env("SECRET_KEY")

FRONTEND_HOST = _env("FRONTEND_HOST", globals().get("FRONTEND_HOST", "http://localhost"))
PORTAL_NAME = _env("PORTAL_NAME", globals().get("PORTAL_NAME", "MediaCMS"))
DEBUG = _env_bool("DEBUG", False) or _env_bool("DEVELOPMENT_MODE", False)
ALLOWED_HOSTS = [h.strip() for h in _env("ALLOWED_HOSTS", "*").split(",") if h.strip()]
_origin = FRONTEND_HOST.rstrip("/")
if _origin.startswith(("http://", "https://")):
    CSRF_TRUSTED_ORIGINS = [_origin]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _env("POSTGRES_NAME", _env("POSTGRES_DB", "mediacms")),
        "HOST": _env("POSTGRES_HOST", "db"),
        "PORT": _env("POSTGRES_PORT", "5432"),
        "USER": _env("POSTGRES_USER", "mediacms"),
        "PASSWORD": _env("POSTGRES_PASSWORD", ""),
        "CONN_MAX_AGE": int(_env("POSTGRES_CONN_MAX_AGE", "60")),
    }
}

REDIS_LOCATION = _env("REDIS_LOCATION", "redis://redis:6379/1")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_LOCATION,
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    }
}
# Both spellings: older trees read BROKER_URL, newer ones CELERY_BROKER_URL.
BROKER_URL = CELERY_BROKER_URL = REDIS_LOCATION
CELERY_RESULT_BACKEND = REDIS_LOCATION

_custom = Path(__file__).resolve().parent.parent / "custom" / "local_settings.py"
if _custom.is_file():
    exec(compile(_custom.read_text(), str(_custom), "exec"))  # noqa: S102 - operator's own file
