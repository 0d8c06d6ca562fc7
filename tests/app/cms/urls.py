"""URLs of the MediaCMS stand-in test application."""

from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import path, re_path
from files import views

urlpatterns = [
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    re_path(r"^api/v1/config/?$", views.api_config, name="api_config"),
    re_path(r"^api/v1/health/?$", views.api_health, name="api_health"),
    re_path(r"^api/v1/media/?$", views.api_media_upload, name="api_media_upload"),
    re_path(r"^api/v1/media/(?P<media_id>\d+)/?$", views.api_media_detail, name="api_media_detail"),
]

# Only with DEBUG on (static() returns [] otherwise): in production nginx serves /media/.
urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
