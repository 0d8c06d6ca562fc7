"""Views of the MediaCMS stand-in test application: a home page and a tiny JSON API."""

import base64
import binascii
import re
from urllib.parse import unquote

from django.conf import settings
from django.contrib.auth import authenticate, login, logout
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .methods import user_allowed_to_upload
from .models import STATES, Media


def home(request):
    return render(request, "home.html", {"portal_name": settings.PORTAL_NAME})


@require_GET
def api_config(request):
    return JsonResponse(
        {
            "portal_name": settings.PORTAL_NAME,
            "frontend_host": settings.FRONTEND_HOST,
            "debug": settings.DEBUG,
        }
    )


@require_GET
def api_health(request):
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any database failure means unhealthy
        return JsonResponse({"status": "error", "detail": str(exc)}, status=503)
    return JsonResponse({"status": "ok"})


def _basic_auth_user(request):
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        username, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return authenticate(request, username=username, password=password)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def api_media(request):
    """GET: the public media, newest first, as MediaCMS lists them (count and results).
    POST multipart (title, media_file) with HTTP Basic auth; 201 with the media JSON."""
    if request.method == "GET":
        public = Media.objects.filter(state="public").select_related("user").order_by("-pk")
        results = [_media_json(request, media) for media in public[:50]]
        return JsonResponse({"count": public.count(), "results": results})
    user = _basic_auth_user(request)
    if user is None or not user.is_active:
        response = JsonResponse({"detail": "authentication required"}, status=401)
        response["WWW-Authenticate"] = 'Basic realm="api"'
        return response
    request.user = user
    if not user_allowed_to_upload(request):
        return JsonResponse({"detail": "you may not upload media"}, status=403)
    title = request.POST.get("title", "").strip()
    upload = request.FILES.get("media_file")
    state = request.POST.get("state", "public")
    if not title or upload is None:
        return JsonResponse({"detail": "title and media_file are required"}, status=400)
    if state not in dict(STATES):
        return JsonResponse({"detail": f"state must be one of {sorted(dict(STATES))}"}, status=400)
    media = Media.objects.create(title=title[:100], user=user, media_file=upload, state=state)
    return JsonResponse(_media_json(request, media), status=201)


@require_GET
def api_media_detail(request, media_id):
    media = Media.objects.filter(pk=media_id).select_related("user").first()
    if media is None:
        return JsonResponse({"detail": "not found"}, status=404)
    return JsonResponse(_media_json(request, media))


def _media_json(request, media):
    """The media's fields and, like MediaCMS's API, its absolute URL: built from the
    request, so it shows which scheme and host the app believes it is served on."""
    detail = reverse("api_media_detail", args=[media.pk])
    return {**media.as_dict(), "url": request.build_absolute_uri(detail)}


@csrf_exempt
@require_POST
def api_login(request):
    """POST with HTTP Basic auth: starts a session (the cookie a browser would hold)."""
    user = _basic_auth_user(request)
    if user is None or not user.is_active:
        return JsonResponse({"detail": "authentication required"}, status=401)
    login(request, user)
    return JsonResponse({"username": user.username})


@csrf_exempt
@require_POST
def api_logout(request):
    """POST: ends the session, as MediaCMS's logout does (its key no longer signs anyone in)."""
    logout(request)
    return HttpResponse(status=204)


@require_GET
def api_whoami(request):
    """MediaCMS's /api/v1/whoami (users app, 7.x and 8.x): the user of the session or of
    HTTP Basic credentials; 403 without one, as upstream's DRF view answers (its first
    authenticator, the session, sends no challenge). nginx asks it before an upload's
    body is read (config/nginx/upload-auth.conf)."""
    user = request.user if request.user.is_authenticated else _basic_auth_user(request)
    if user is None or not user.is_active:
        return JsonResponse({"detail": "Authentication credentials were not provided."},
                            status=403)  # fmt: skip
    request.user = user  # as Django REST framework's authentication does
    return JsonResponse({"username": user.username, "is_staff": user.is_staff})


UID = re.compile(r"[0-9a-f]{32}")


@require_GET
def media_auth(request):
    """nginx's auth_request for /media/(encoded|hls|original)/, MediaCMS 8.3's contract.

    The file's path comes in X-Original-URI and must hold its media's uid; public and
    unlisted media are open to all, private ones to their owner and to staff. 204 lets
    nginx serve the file, 403 refuses it.
    """
    uri = request.META.get("HTTP_X_ORIGINAL_URI", "")
    path = unquote(uri.split("?", 1)[0])
    found = UID.search(uri)
    if ".." in path.split("/") or not found:
        return HttpResponse(status=403)
    media = Media.objects.filter(uid=found.group(0)).first()
    user = request.user
    allowed = media is not None and (
        media.state in ("public", "unlisted")
        or (user.is_authenticated and (media.user_id == user.id or user.is_staff))
    )
    return HttpResponse(status=204 if allowed else 403)


@require_GET
def api_request_info(request):
    """What the proxy in front told the app about the request (tests of nginx's headers)."""
    meta = request.META
    names = ("REMOTE_ADDR", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_REAL_IP",
             "HTTP_FORWARDED", "HTTP_X_FORWARDED_HOST", "HTTP_HOST", "CONTENT_LENGTH")  # fmt: skip
    return JsonResponse(
        {"meta": {name: meta.get(name) for name in names}, "is_secure": request.is_secure()}
    )
