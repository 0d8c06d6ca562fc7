"""Django project package of the MediaCMS stand-in test application."""

from .celery import app as celery_app

__all__ = ("celery_app",)
