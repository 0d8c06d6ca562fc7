"""On upload: probe the file in the web process (like MediaCMS), then queue the tasks."""

import json
import logging
import subprocess

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from .models import Media

logger = logging.getLogger(__name__)


def probe_duration(path):
    """Return the duration in seconds that ffprobe reports for path, or None."""
    cmd = [settings.FFPROBE_COMMAND, "-v", "error", "-print_format", "json", "-show_format", path]
    try:
        out = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout
        return float(json.loads(out)["format"]["duration"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        logger.warning("ffprobe failed on %s: %s", path, exc)
        return None


@receiver(post_save, sender=Media)
def media_created(sender, instance, created, **kwargs):
    if not created or not instance.media_file:
        return
    from . import tasks

    duration = probe_duration(instance.media_file.path)
    Media.objects.filter(pk=instance.pk).update(duration=duration)
    instance.duration = duration
    media_id = instance.pk
    instance.encode()
    transaction.on_commit(lambda: tasks.make_thumbnail.delay(media_id))
