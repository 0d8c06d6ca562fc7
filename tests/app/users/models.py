"""User model of the test application (``AUTH_USER_MODEL = "users.User"`` like MediaCMS)."""

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    name = models.CharField("full name", max_length=250, blank=True)

    def __str__(self):
        return self.username
