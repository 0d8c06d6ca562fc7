"""Media models of the MediaCMS stand-in test application."""

import uuid

from django.conf import settings
from django.db import models, transaction

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

    @property
    def friendly_token(self):
        """MediaCMS names a media item by its friendly_token; here it is the uid's hex."""
        return self.uid.hex

    def encode(self):
        """Like MediaCMS's Media.encode: an Encoding row per profile (here the first one
        only), each queued to encode_media once the transaction commits."""
        from . import tasks

        profile = EncodingProfile.objects.order_by("id").first()
        if profile is None:
            return
        encoding = Encoding.objects.create(media=self, profile=profile)
        kwargs = {"friendly_token": self.friendly_token, "profile_id": profile.id,
                  "encoding_id": encoding.id, "force": True}  # fmt: skip
        transaction.on_commit(lambda: tasks.encode_media.apply_async(kwargs=kwargs))

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


class Encoding(models.Model):
    """One rendition of a media item, shaped like MediaCMS's files.Encoding: its status
    (pending, running, fail, success), add_date and update_date, media and profile."""

    media = models.ForeignKey(Media, on_delete=models.CASCADE, related_name="encodings")
    profile = models.ForeignKey(EncodingProfile, on_delete=models.CASCADE)
    status = models.CharField(max_length=20, choices=ENCODING_STATUS, default="pending")
    progress = models.PositiveSmallIntegerField(default=0)
    chunk = models.BooleanField(default=False)
    chunk_file_path = models.CharField(max_length=400, blank=True)
    retries = models.IntegerField(default=0)
    add_date = models.DateTimeField(auto_now_add=True)
    update_date = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.profile.name}-{self.media.title}"
