"""Media models of the MediaCMS stand-in test application."""

import uuid

from django.conf import settings
from django.db import models

STATES = [("public", "Public"), ("unlisted", "Unlisted"), ("private", "Private")]

ENCODING_STATUS = [
    ("pending", "Pending"),
    ("running", "Running"),
    ("success", "Success"),
    ("fail", "Fail"),
]


class EncodingProfile(models.Model):
    name = models.CharField(max_length=90)
    extension = models.CharField(max_length=10, default="mp4")
    resolution = models.IntegerField(help_text="output height in pixels")
    codec = models.CharField(max_length=10, default="h264")

    def __str__(self):
        return self.name


class Category(models.Model):
    title = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "categories"

    def __str__(self):
        return self.title


def original_media_file_path(instance, filename):
    """Like MediaCMS: the media's uid (32 hex digits) is in every protected file's path."""
    return f"original/user/{instance.user.username}/{instance.uid.hex}.{filename}"


class Media(models.Model):
    uid = models.UUIDField(default=uuid.uuid4, editable=False)
    state = models.CharField(max_length=20, choices=STATES, default="public")
    title = models.CharField(max_length=100)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="media"
    )
    category = models.ManyToManyField(Category, blank=True)
    media_file = models.FileField(upload_to=original_media_file_path, max_length=500)
    encoded_file = models.FileField(upload_to="encoded/", max_length=500, blank=True)
    thumbnail = models.ImageField(upload_to="original/thumbnails/", max_length=500, blank=True)
    duration = models.FloatField(null=True, blank=True)
    encoding_status = models.CharField(max_length=20, choices=ENCODING_STATUS, default="pending")
    add_date = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "media"
        ordering = ("-add_date",)

    def __str__(self):
        return self.title

    def as_dict(self):
        def url(field):
            return field.url if field else None

        return {
            "id": self.id,
            "uid": self.uid.hex,
            "state": self.state,
            "title": self.title,
            "user": self.user.username,
            "encoding_status": self.encoding_status,
            "duration": self.duration,
            "original_url": url(self.media_file),
            "encoded_url": url(self.encoded_file),
            "thumbnail_url": url(self.thumbnail),
        }
