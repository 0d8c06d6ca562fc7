"""URLs of the MediaCMS stand-in test application."""

# MediaCMS loads its SAML support (python3-saml: lxml and xmlsec) with its URLs, in every
# web process: xmlsec refuses to start when lxml runs on another libxml2.
import xmlsec  # noqa: F401
from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.contrib.auth import views as auth
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # MediaCMS's password reset is allauth's, at these paths; here Django's own views
    # (the admin's templates) send the same kind of mail through EMAIL_BACKEND.
    path(
        "accounts/password/reset/", auth.PasswordResetView.as_view(), name="account_reset_password"
    ),
    path(
        "accounts/password/reset/done/",
        auth.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "accounts/password/reset/key/<uidb64>/<token>/",
        auth.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "accounts/password/reset/key/done/",
        auth.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("", include("files.urls")),
]

# Only with DEBUG on (static() returns [] otherwise): in production nginx serves /media/.
urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
