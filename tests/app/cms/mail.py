"""E-mail the way MediaCMS sends it: queued for Celery, sent by a short_tasks worker.

MediaCMS sets ``EMAIL_BACKEND = "djcelery_email.backends.CeleryEmailBackend"`` with
``CELERY_EMAIL_TASK_CONFIG = {"queue": "short_tasks"}``: a request that sends mail
(allauth's password reset) only queues it, and a celery_short worker hands it to
``CELERY_EMAIL_BACKEND`` (Django's SMTP backend unless set). This is that path in a few
lines, without the package.
"""

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.base import BaseEmailBackend


def as_dict(message):
    """A message as JSON Celery can carry (text, alternatives, addresses, headers)."""
    return {
        "subject": message.subject,
        "body": message.body,
        "from_email": message.from_email,
        "to": list(message.to),
        "cc": list(message.cc),
        "bcc": list(message.bcc),
        "reply_to": list(message.reply_to),
        "headers": dict(message.extra_headers),
        "alternatives": [list(a) for a in getattr(message, "alternatives", [])],
    }


def from_dict(data):
    alternatives = [tuple(a) for a in data.pop("alternatives", [])]
    return EmailMultiAlternatives(**data, alternatives=alternatives)


class CeleryEmailBackend(BaseEmailBackend):
    """Queues every message; ``files.tasks.send_emails`` sends them in the worker."""

    def send_messages(self, email_messages):
        from files.tasks import send_emails

        messages = [as_dict(m) for m in email_messages]
        if messages:
            config = getattr(settings, "CELERY_EMAIL_TASK_CONFIG", {})
            send_emails.apply_async((messages,), **config)
        return len(messages)
