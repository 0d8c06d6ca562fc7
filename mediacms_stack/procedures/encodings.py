"""MediaCMS's encodings as the running site sees them: counted, listed, re-queued.

Everything is asked of Django in the web container (``manage.py shell -c``, the request
as JSON on stdin, the answer as one ``@encodings`` line). What this relies on in the
MediaCMS tree goes beyond the tree contract, so it is kept to the least, the same in
7.x and 8.x trees:

* the model ``files.Encoding`` (looked up through Django's app registry) with ``status``
  ``pending``/``running``/``fail``, ``update_date`` (auto_now: when the row was queued or
  last written by a worker), ``media`` (its ``friendly_token`` and ``title``),
  ``profile`` (its ``name``), ``chunk`` and ``chunk_file_path``;
* the task ``files.tasks.encode_media``, called by keyword as the tree's own
  ``Media.encode`` queues it (friendly_token, profile_id, encoding_id, force), with the
  chunk and, where its signature asks for it (7.x), ``encoding_url``; the task keeps its
  own routing (``long_tasks``).

A *stuck* encoding is one still ``running`` whose row nobody wrote for longer than the
threshold: its worker died, was restarted or was killed by the task's time limit
without recording the failure.
"""

from __future__ import annotations

import io
import json

from invoke.context import Context

from ..engines.compose import Compose
from ..engines.shell import run
from ..stack.errors import StackError
from .ops import format_age, format_table

#: Minutes without a write after which a running encoding counts as stuck: MediaCMS's
#: CELERY_SOFT_TIME_LIMIT (2 h) ends any encode_media task sooner.
STUCK_AFTER_MINUTES = 120

ANSWER_LINE = "@encodings\t"

#: Run by ``manage.py shell -c`` in web; reads {"stuck_after": s, "details": b,
#: "retry": b} on stdin and prints one ``@encodings`` line of JSON. A retry moves the
#: row back to ``pending`` only when nobody changed it since it was read, then queues it.
ENCODINGS_CODE = r"""
import inspect, json, sys
from datetime import timedelta
from django.apps import apps
from django.conf import settings
from django.db.models import Count, Min
from django.utils import timezone

ask = json.load(sys.stdin)
Encoding = apps.get_model("files", "Encoding")
now = timezone.now()
rows = Encoding.objects.order_by()
counts = dict(rows.filter(status__in=("pending", "running", "fail"))
              .values_list("status").annotate(n=Count("id")))
oldest = rows.filter(status="pending").aggregate(t=Min("update_date"))["t"]
chosen = {
    "fail": rows.filter(status="fail"),
    "stuck": rows.filter(status="running",
                         update_date__lt=now - timedelta(seconds=ask["stuck_after"])),
}
answer = {
    "pending": counts.get("pending", 0),
    "running": counts.get("running", 0),
    "failed": counts.get("fail", 0),
    "stuck": chosen["stuck"].count(),
    "oldest_pending_seconds": (now - oldest).total_seconds() if oldest else None,
    "listed": [],
    "retried": [],
}
if ask["details"] or ask["retry"]:
    for kind, query in chosen.items():
        for e in query.select_related("media", "profile").order_by("-update_date"):
            answer["listed"].append({
                "id": e.id, "kind": kind, "media": e.media.friendly_token,
                "title": e.media.title, "profile": e.profile.name, "chunk": e.chunk,
                "seconds": (now - e.update_date).total_seconds(), "_row": e})
if ask["retry"]:
    from files.tasks import encode_media
    takes = inspect.signature(encode_media.run).parameters
    for item in answer["listed"]:
        e = item["_row"]
        if not Encoding.objects.filter(pk=e.pk, status=e.status, update_date=e.update_date
                                       ).update(status="pending", progress=0, update_date=now):
            continue
        kwargs = {"friendly_token": e.media.friendly_token, "profile_id": e.profile_id,
                  "encoding_id": e.id, "force": True}
        if e.chunk:
            kwargs.update(chunk=True, chunk_file_path=e.chunk_file_path)
        if "encoding_url" in takes:
            kwargs["encoding_url"] = settings.SSL_FRONTEND_HOST + e.get_absolute_url()
        encode_media.apply_async(kwargs=kwargs)
        answer["retried"].append(e.id)
for item in answer["listed"]:
    del item["_row"]
print("@encodings\t" + json.dumps(answer))
"""


def parse_answer(stdout: str) -> dict:
    """The JSON of the script's ``@encodings`` line (Django may print other lines)."""
    for line in stdout.splitlines():
        if line.startswith(ANSWER_LINE):
            return json.loads(line[len(ANSWER_LINE) :])
    raise StackError("no answer from the encodings script in web")


def ask(c: Context, compose: Compose, *, stuck_after: float, details: bool = False,
        retry: bool = False) -> dict:  # fmt: skip
    """Counts (and with ``details`` the failed and stuck encodings) of the running site;
    ``retry`` re-queues those listed. Read-only unless ``retry``, so it runs in dry runs."""
    request = json.dumps({"stuck_after": stuck_after, "details": details, "retry": retry})
    argv = compose.argv("exec", "-T", "web", "python", "manage.py", "shell", "-c", ENCODINGS_CODE)
    result = run(c, argv, query=not retry, hide=True, warn=True, in_stream=io.StringIO(request))
    if not result.ok:
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise StackError("could not read the encodings through Django in web: "
                         + (said[-1] if said else f"exit {result.exited}"))  # fmt: skip
    return parse_answer(result.stdout)


def format_listed(listed: list[dict]) -> str:
    """One row per failed or stuck encoding."""
    rows = [(str(e["id"]), e["kind"], format_age(e["seconds"]), e["profile"], e["media"],
             e["title"]) for e in listed]  # fmt: skip
    return format_table(rows, ("ID", "KIND", "AGE", "PROFILE", "MEDIA", "TITLE"))
