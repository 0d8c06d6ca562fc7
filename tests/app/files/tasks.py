"""Celery tasks of the test application: real ffmpeg work on the two upstream queues."""

import logging
import os
import shutil
import subprocess
import tempfile

from celery import shared_task
from django.conf import settings
from django.utils import timezone
from PIL import Image

from .models import Encoding, EncodingProfile, Media

logger = logging.getLogger(__name__)
THUMBNAIL_SIZE = (320, 180)


def _run(cmd, timeout):
    logger.info("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)


@shared_task(name="files.tasks.encode_media")
def encode_media(friendly_token, profile_id, encoding_id, force=True, chunk=False,
                 chunk_file_path=""):  # fmt: skip
    """Transcode one Encoding to H.264/AAC mp4 at its profile's height (long_tasks).

    Called like MediaCMS's encode_media (``force``, ``chunk`` and ``chunk_file_path`` are
    accepted and unused: the stand-in never splits a video). The Encoding is ``running``
    while ffmpeg works, then ``success`` or ``fail``, and the media item follows it. Like
    MediaCMS, ffmpeg writes into a temporary folder under TEMP_DIRECTORY and the result
    is moved into MEDIA_ROOT once complete.
    """
    encodings = Encoding.objects.filter(pk=encoding_id)
    media = Media.objects.filter(uid=friendly_token).first()
    profile = EncodingProfile.objects.filter(pk=profile_id).first()
    if media is None or profile is None or not encodings.exists():
        logger.info("nothing to encode for %s/%s/%s", friendly_token, profile_id, encoding_id)
        return False
    media_rows = Media.objects.filter(pk=media.pk)

    def finish(status, **fields):
        encodings.update(status=status, update_date=timezone.now())
        media_rows.update(encoding_status=status, **fields)
        return status

    finish("running")
    height = profile.resolution
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
            logger.error("encoding %s of media %s failed: %s", encoding_id, media.pk,
                         getattr(exc, "stderr", exc))  # fmt: skip
            return finish("fail")
    return finish("success", encoded_file=name)


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
