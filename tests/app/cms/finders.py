"""Static finder of the test application: with DEBUG on, let runserver serve the
prebuilt assets committed in STATIC_ROOT. It lists nothing, so collectstatic
never copies STATIC_ROOT onto itself, and it finds nothing when DEBUG is off."""

import os

from django.conf import settings
from django.contrib.staticfiles.finders import BaseFinder
from django.core.exceptions import SuspiciousFileOperation
from django.utils._os import safe_join


class StaticRootFinder(BaseFinder):
    def find(self, path, find_all=False, **kwargs):
        find_all = find_all or kwargs.get("all", False)
        if not settings.DEBUG or not settings.STATIC_ROOT:
            return []
        try:
            full = safe_join(settings.STATIC_ROOT, path)
        except (SuspiciousFileOperation, ValueError):
            full = None
        if full and os.path.isfile(full):
            return [full] if find_all else full
        return []  # like Django's own finders: an empty list when nothing matches

    def list(self, ignore_patterns):
        return []
