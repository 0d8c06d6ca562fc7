"""Celery tasks of the test application: real ffmpeg work on the two upstream queues."""

import logging
import os
import shutil
import subprocess
import tempfile

from celery import shared_task
from django.conf import settings
from PIL import Image

from .models import EncodingProfile, Media

logger = logging.getLogger(__name__)
THUMBNAIL_SIZE = (320, 180)


def _run(cmd, timeout):
    logger.info("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)


@shared_task(name="files.tasks.encode_media")
def encode_media(media_id):
    """Transcode to H.264/AAC mp4 at the first EncodingProfile's height (long_tasks).

    Like MediaCMS, ffmpeg writes into a temporary folder under TEMP_DIRECTORY and the
    result is moved into MEDIA_ROOT once complete.
    """
    media = Media.objects.get(pk=media_id)
    profile = EncodingProfile.objects.order_by("id").first()
    height = profile.resolution if profile else 240
    Media.objects.filter(pk=media_id).update(encoding_status="running")
    name = f"encoded/{media.uid.hex}_{height}p.mp4"  # uid in the path, as MediaCMS
    output = os.path.join(settings.MEDIA_ROOT, name)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.TEMP_DIRECTORY) as tmp:
        partial = os.path.join(tmp, "encoded.mp4")
        cmd = [
            settings.FFMPEG_COMMAND,
            "-y",
            "-v",
            "error",
            "-i",
            media.media_file.path,
            "-vf",
            f"scale=-2:{height}",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-movflags",
            "+faststart",
            partial,
        ]
        try:
            _run(cmd, timeout=None)
            shutil.move(partial, output)
        except (OSError, subprocess.SubprocessError) as exc:
            logger.error("encoding media %s failed: %s", media_id, getattr(exc, "stderr", exc))
            Media.objects.filter(pk=media_id).update(encoding_status="fail")
            return "fail"
    Media.objects.filter(pk=media_id).update(encoded_file=name, encoding_status="success")
    return "success"


@shared_task(name="files.tasks.make_thumbnail", soft_time_limit=300)
def make_thumbnail(media_id):
    """Grab one frame with ffmpeg and shrink it with Pillow (short_tasks)."""
    media = Media.objects.get(pk=media_id)
    offset = min(1.0, (media.duration or 0) / 2)
    name = f"original/thumbnails/{media.uid.hex}.jpg"
    output = os.path.join(settings.MEDIA_ROOT, name)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.TEMP_DIRECTORY) as tmp:
        frame = os.path.join(tmp, "frame.png")
        cmd = [
            settings.FFMPEG_COMMAND,
            "-y",
            "-v",
            "error",
            "-ss",
            str(offset),
            "-i",
            media.media_file.path,
            "-frames:v",
            "1",
            frame,
        ]
        try:
            _run(cmd, timeout=240)
        except (OSError, subprocess.SubprocessError) as exc:
            logger.error("thumbnail of media %s failed: %s", media_id, getattr(exc, "stderr", exc))
            return None
        with Image.open(frame) as img:
            img = img.convert("RGB")
            img.thumbnail(THUMBNAIL_SIZE)
            img.save(output, "JPEG", quality=85)
    Media.objects.filter(pk=media_id).update(thumbnail=name)
    return name


@shared_task(name="files.tasks.heartbeat", soft_time_limit=300)
def heartbeat():
    """Cheap periodic task run by celery beat every 60 s: count media awaiting encoding."""
    pending = Media.objects.filter(encoding_status="pending").count()
    logger.info("heartbeat: %d media pending", pending)
    return pending


@shared_task(name="files.tasks.send_emails")
def send_emails(messages):
    """Send what cms.mail.CeleryEmailBackend queued, through CELERY_EMAIL_BACKEND."""
    from cms.mail import from_dict
    from django.core.mail import get_connection

    backend = getattr(
        settings, "CELERY_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend"
    )
    with get_connection(backend) as connection:
        sent = connection.send_messages([from_dict(dict(m)) for m in messages])
    logger.info("sent %s of %s e-mail messages", sent, len(messages))
    return sent
