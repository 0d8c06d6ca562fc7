"""URLs of the MediaCMS stand-in test application."""

# MediaCMS loads its SAML support (python3-saml: lxml and xmlsec) with its URLs, in every
# web process: xmlsec refuses to start when lxml runs on another libxml2.
import xmlsec  # noqa: F401
from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("files.urls")),
]

# Only with DEBUG on (static() returns [] otherwise): in production nginx serves /media/.
urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
