"""The images' URL configuration: the tree's own (``TREE_URLCONF``, its ROOT_URLCONF), one
view of this stack's, which nginx alone asks (config/nginx/upload-auth.conf), and the page
of a visitor past a rate limit (``handler429``, below).

``/_stack/can-upload``: may the visitor upload? nginx asks it in the access phase of the
upload locations, before it reads a byte of the body, so a visitor who may not upload
(anonymous, wrong password, or logged in without MediaCMS's permission: CAN_ADD_MEDIA,
the per-user media limit) never gets a body written to our disks. The view asks the
tree's own code both questions: who the visitor is (the tree's /api/v1/whoami, with
whichever authentications the tree has: session, HTTP Basic, token) and whether that
user may upload (``files.methods.user_allowed_to_upload``, MediaCMS 7.x and 8.x). A tree
without that hook lets every logged-in user upload, as its own views would.

The disk comes before anyone's upload: when the body nginx is about to write (its
Content-Length, X-Upload-Length here) would leave less than UPLOAD_DISK_RESERVE_MB free
on the media volume's filesystem (the volumes' one: PostgreSQL's data is there too), the
answer is 507, which nginx turns into its 503 page and logs: the upload is refused
instead of filling the disk under the database.

Answers: 204 yes; whoami's own 401/403 for an unknown visitor; 403 for a known one who
may not upload; 507 for no room. nginx sends a refusal to the client with the body
discarded unread. Any answer but those three (nginx gives the visitor its 503 page for
it) is written to web's log with its reason, an exception with its traceback: Django
itself logs nothing to the console when DEBUG is off.
"""

import os
import shutil
import sys
import traceback
from importlib import import_module

from django.conf import settings
from django.http import HttpResponse
from django.urls import Resolver404, path, resolve
from django.views.decorators.http import require_GET

_tree = import_module(settings.TREE_URLCONF)

#: The tree's "who is this?" endpoint (users app, 7.x and 8.x; the stand-in's too).
WHOAMI = "/api/v1/whoami"
#: What must stay free on the volumes' filesystem after an upload's body is written.
RESERVE = int(os.environ.get("UPLOAD_DISK_RESERVE_MB") or 2048) * 2**20


def _room_for(request) -> bool:
    length = request.META.get("HTTP_X_UPLOAD_LENGTH", "")
    wanted = int(length) if length.isdigit() else 0
    return shutil.disk_usage(settings.MEDIA_ROOT).free - wanted >= RESERVE


def _may_upload(request) -> bool:
    try:
        hook = import_module("files.methods").user_allowed_to_upload
    except (ImportError, AttributeError):
        return True
    return bool(hook(request))


def _refused(status: int, why: str) -> HttpResponse:
    if status not in (401, 403):
        print(f"can-upload: {status}: {why}", file=sys.stderr, flush=True)
    return HttpResponse(status=status)


def _answer(request) -> HttpResponse:
    try:
        whoami = resolve(WHOAMI)
    except Resolver404:
        return _refused(500, f"the tree has no {WHOAMI}")
    # The tree's view authenticates the visitor and sets request.user (Django REST
    # framework sets it on the underlying request too) for the hook below.
    known = whoami.func(request, *whoami.args, **whoami.kwargs)
    if known.status_code != 200:
        return _refused(known.status_code, f"{WHOAMI} answered {known.status_code}")
    if not _may_upload(request):
        return _refused(403, "user_allowed_to_upload said no")
    if not _room_for(request):
        return _refused(507, f"under UPLOAD_DISK_RESERVE_MB free on {settings.MEDIA_ROOT}")
    return HttpResponse(status=204)


@require_GET
def can_upload(request):
    try:
        return _answer(request)
    except Exception:
        traceback.print_exc()
        raise


urlpatterns = [path("_stack/can-upload", can_upload), *_tree.urlpatterns]

#: What a visitor past a rate limit reads: a page of its own, no template, no asset.
TOO_MANY = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Too many attempts</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 4em auto; padding: 0 1em">
<h1>Too many attempts</h1>
<p>This was tried too often in a short time. Wait a few minutes, then try again.</p>
</body></html>
"""


def too_many(request, exception=None) -> HttpResponse:
    """django-allauth's answer past its rate limits (failed logins, password resets...):
    it renders a 429.html that neither MediaCMS tree has, a server error at every try,
    unless the root URL configuration has a ``handler429``; this is ours."""
    return HttpResponse(TOO_MANY, status=429, content_type="text/html; charset=utf-8")


# Django looks for the error views in the root URL configuration (allauth for handler429):
# the tree's, if any.
handler429 = too_many
for _name in ("handler400", "handler403", "handler404", "handler429", "handler500"):
    if hasattr(_tree, _name):
        globals()[_name] = getattr(_tree, _name)
