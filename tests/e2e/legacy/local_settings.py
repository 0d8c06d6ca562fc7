# cms/local_settings.py of the legacy (7.x-style) deployment: what an operator of the
# monolithic image typically had. The migration must carry the operator's own settings
# over and leave out what the new layout owns.
import os

FRONTEND_HOST = os.getenv("FRONTEND_HOST", "http://legacy.example.org")
PORTAL_NAME = "Legacy Portal"
# SECRET_KEY is not set here: this deployment keeps it in .secret_key

POSTGRES_HOST = os.getenv("POSTGRES_HOST", "db")
REDIS_LOCATION = os.getenv("REDIS_LOCATION", "redis://redis:6379/1")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "mediacms",
        "HOST": POSTGRES_HOST,
        "PORT": "5432",
        "USER": "mediacms",
        "PASSWORD": "mediacms",
    }
}
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_LOCATION,
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    }
}
CELERY_BROKER_URL = BROKER_URL = REDIS_LOCATION
CELERY_RESULT_BACKEND = BROKER_URL
# Like 7.x's cms/settings.py: logged-in sessions live only in the cache (Redis).
SESSION_ENGINE = "django.contrib.sessions.backends.cache"

# The operator's own choices, which must survive the move:
MEDIA_UPLOAD_NOTE = "kept by the migration"
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2500
