"""Settings of the MediaCMS stand-in *test application*.

Shaped like upstream MediaCMS 8.x settings: same names, defaults pointing at a
local PostgreSQL and Redis, no fixed SECRET_KEY, and a trailing import of
``cms/local_settings.py`` (provided by the image, not by this tree).
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

# Like 8.x: environment, or a .secret_key file at the tree's root; never a fixed key.
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY and (BASE_DIR / ".secret_key").is_file():
    SECRET_KEY = (BASE_DIR / ".secret_key").read_text().strip()
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is not set: set the SECRET_KEY environment variable "
        "or write a .secret_key file at the root of the tree."
    )

DEBUG = os.environ.get("DEBUG", "False").lower() in ("true", "1", "yes")
DEVELOPMENT_MODE = os.environ.get("DEVELOPMENT_MODE", "False") == "True"
if DEVELOPMENT_MODE:
    DEBUG = True
TESTING = os.environ.get("TESTING", "False") == "True"

ALLOWED_HOSTS = ["*"]
PORTAL_NAME = "MediaCMS test app"
FRONTEND_HOST = "http://localhost"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "users.apps.UsersConfig",
    "files.apps.FilesConfig",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "cms.urls"
WSGI_APPLICATION = "cms.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

AUTH_USER_MODEL = "users.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "mediacms",
        "HOST": "localhost",
        "PORT": "5432",
        "USER": "mediacms",
        "PASSWORD": "mediacms",
    }
}

REDIS_LOCATION = os.environ.get("REDIS_LOCATION", "redis://127.0.0.1:6379/1")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_LOCATION,
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# Local verification only (never set in images): sqlite + in-process cache.
if os.environ.get("TEST_SQLITE") == "1":
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_LOCATION
CELERY_RESULT_BACKEND = REDIS_LOCATION
CELERY_TASK_DEFAULT_QUEUE = "short_tasks"
CELERY_TASK_ROUTES = {
    "files.tasks.make_thumbnail": {"queue": "short_tasks"},
    "files.tasks.encode_media": {"queue": "long_tasks"},
    "files.tasks.heartbeat": {"queue": "short_tasks"},
    "files.tasks.send_emails": {"queue": "short_tasks"},
}
CELERY_BEAT_SCHEDULE = {
    "heartbeat": {
        "task": "files.tasks.heartbeat",
        "schedule": 60.0,
        "options": {"queue": "short_tasks"},
    },
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
if TESTING:
    CELERY_TASK_ALWAYS_EAGER = True
    CELERY_TASK_EAGER_PROPAGATES = True

# E-mail as MediaCMS 8.x ships it: example values (an operator sets theirs in
# custom/local_settings.py), and every message queued for a short_tasks worker.
DEFAULT_FROM_EMAIL = "info@mediacms.io"
EMAIL_HOST_PASSWORD = "xyz"
EMAIL_HOST_USER = "info@mediacms.io"
EMAIL_USE_TLS = True
SERVER_EMAIL = DEFAULT_FROM_EMAIL
EMAIL_HOST = "mediacms.io"
EMAIL_PORT = 587
EMAIL_BACKEND = "cms.mail.CeleryEmailBackend"  # upstream: djcelery_email's, same path
CELERY_EMAIL_TASK_CONFIG = {"queue": "short_tasks"}

STATIC_URL = "/static/"
STATIC_ROOT = str(BASE_DIR / "static") + "/"
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    # lets runserver (DEBUG) serve the prebuilt assets committed in static/
    "cms.finders.StaticRootFinder",
]
MEDIA_URL = "/media/"
MEDIA_ROOT = str(BASE_DIR / "media_files") + "/"
LOGS_DIR = str(BASE_DIR / "logs")
TEMP_DIRECTORY = "/tmp"  # as upstream: transcoding and thumbnails work in here
# Like 8.x: Django's errors go to logs/debug.log, created at import when missing (a
# fresh checkout has no logs/); the images ship the folder writable.
ERROR_LOG = Path(LOGS_DIR) / "debug.log"
if not ERROR_LOG.parent.exists():
    try:  # noqa: SIM105 (kept as upstream writes it)
        ERROR_LOG.parent.mkdir()
    except PermissionError:
        pass
ERROR_LOG.touch()

FFMPEG_COMMAND = "ffmpeg"
FFPROBE_COMMAND = "ffprobe"
MP4HLS_COMMAND = "/home/mediacms.io/bento4/bin/mp4hls"  # upstream name; unused here

USE_X_FORWARDED_HOST = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "file": {"class": "logging.FileHandler", "filename": str(ERROR_LOG), "level": "ERROR"},
    },
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {"django": {"handlers": ["file"], "level": "ERROR", "propagate": True}},
}

try:  # noqa: SIM105 (kept as upstream writes it)
    from .local_settings import *  # noqa
except ImportError:
    pass
