"""MediaCMS's files/methods.py hooks that the images rely on (the tree contract)."""

from django.contrib.auth.models import Group

#: Members of this group may not upload: the stand-in's own rule, where MediaCMS's are
#: CAN_ADD_MEDIA and NUMBER_OF_MEDIA_USER_CAN_UPLOAD (the tests make such a user).
NO_UPLOADS = "cannot-upload"


def user_allowed_to_upload(request):
    """Whether the request's user may upload, as MediaCMS's function of this name says
    (its upload views and nginx's question before the body, /_stack/can-upload, ask it)."""
    user = request.user
    if not user.is_authenticated or not user.is_active:
        return False
    return not Group.objects.filter(name=NO_UPLOADS, user=user).exists()
