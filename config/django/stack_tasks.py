"""The images' one periodic task: a look for stuck encodings, so that an operator hears
of them without asking (`invoke status` and `invoke encodings` count and list them too).

The image installs this file as ``cms/stack_tasks.py``; container_settings.py has every
worker import it (CELERY_IMPORTS) and beat send it to the short queue every
``EVERY_SECONDS``. A stuck encoding is one still ``running`` whose row nobody wrote for
``STUCK_MINUTES``: its worker died, was restarted or was ended by the task's time limit
without recording it. Each is logged as a warning in celery_short's log, with the command
that queues it again; nothing is changed here.
"""

from datetime import timedelta

from celery import shared_task
from celery.utils.log import get_task_logger

#: MediaCMS's task time limit (CELERY_SOFT_TIME_LIMIT, 2 h), as the tasks' own threshold
#: (mediacms_stack/procedures/encodings.py, STUCK_AFTER_MINUTES; a unit test keeps them equal).
STUCK_MINUTES = 120
EVERY_SECONDS = 15 * 60
NAME = "cms.stack_tasks.look_for_stuck_encodings"

log = get_task_logger(__name__)


@shared_task(name=NAME, ignore_result=True)
def look_for_stuck_encodings() -> int:
    """Log each stuck encoding; return how many there are."""
    from django.apps import apps
    from django.utils import timezone

    now = timezone.now()
    stuck = (
        apps.get_model("files", "Encoding")
        .objects.filter(status="running", update_date__lt=now - timedelta(minutes=STUCK_MINUTES))
        .select_related("media", "profile")
        .order_by("update_date")
    )
    found = 0
    for encoding in stuck:
        found += 1
        log.warning(
            "stuck encoding %s: media %s (%r), profile %s, running and unchanged for %d min; "
            "`invoke encodings --retry` queues it again",
            encoding.id, encoding.media.friendly_token, encoding.media.title,
            encoding.profile.name, (now - encoding.update_date).total_seconds() // 60,
        )  # fmt: skip
    return found
