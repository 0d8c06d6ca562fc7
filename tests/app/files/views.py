"""Views of the MediaCMS stand-in test application: a home page and a tiny JSON API."""

import base64
import binascii

from django.conf import settings
from django.contrib.auth import authenticate
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import Media


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
@require_POST
def api_media_upload(request):
    """POST multipart (title, media_file) with HTTP Basic auth; 201 with the media JSON."""
    user = _basic_auth_user(request)
    if user is None or not user.is_active:
        response = JsonResponse({"detail": "authentication required"}, status=401)
        response["WWW-Authenticate"] = 'Basic realm="api"'
        return response
    title = request.POST.get("title", "").strip()
    upload = request.FILES.get("media_file")
    if not title or upload is None:
        return JsonResponse({"detail": "title and media_file are required"}, status=400)
    media = Media.objects.create(title=title[:100], user=user, media_file=upload)
    return JsonResponse(media.as_dict(), status=201)


@require_GET
def api_media_detail(request, media_id):
    media = Media.objects.filter(pk=media_id).select_related("user").first()
    if media is None:
        return JsonResponse({"detail": "not found"}, status=404)
    return JsonResponse(media.as_dict())
