"""URLs of the stand-in's media app; like MediaCMS, files/urls.py is where they live."""

from django.urls import path, re_path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    re_path(r"^api/v1/config/?$", views.api_config, name="api_config"),
    re_path(r"^api/v1/health/?$", views.api_health, name="api_health"),
    re_path(r"^api/v1/media/?$", views.api_media, name="api_media"),
    re_path(r"^api/v1/media/(?P<media_id>\d+)/?$", views.api_media_detail, name="api_media_detail"),
    re_path(r"^api/v1/media-auth$", views.media_auth, name="media_auth"),
    re_path(r"^api/v1/login$", views.api_login, name="api_login"),
    re_path(r"^api/v1/logout$", views.api_logout, name="api_logout"),
    path("api/v1/whoami", views.api_whoami, name="api_whoami"),
    re_path(r"^api/v1/request-info$", views.api_request_info, name="api_request_info"),
]
