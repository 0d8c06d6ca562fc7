"""Password-reset mail goes the way MediaCMS sends it: queued, then sent by the worker."""

import pytest
from django.core import mail
from users.models import User


@pytest.mark.django_db
def test_password_reset_mail_is_queued_then_sent_by_the_worker_backend(client, settings):
    settings.EMAIL_BACKEND = "cms.mail.CeleryEmailBackend"  # the test runner's locmem otherwise
    settings.CELERY_EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    User.objects.create_user("someone", "someone@example.test", "pw-123456789")
    form = client.get("/accounts/password/reset/")
    assert form.status_code == 200
    sent = client.post("/accounts/password/reset/", {"email": "someone@example.test"})
    assert sent.status_code == 302 and sent["Location"] == "/accounts/password/reset/done/"
    (message,) = mail.outbox  # TESTING: Celery runs the task eagerly
    assert message.to == ["someone@example.test"]
    assert "/accounts/password/reset/key/" in message.body
