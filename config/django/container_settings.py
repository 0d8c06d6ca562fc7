"""Entry settings module of the images (``DJANGO_SETTINGS_MODULE=cms.container_settings``).

Trees differ in where ``cms/settings.py`` looks for local overrides (``cms.local_settings``
in releases, ``custom.local_settings`` in the 7.3 restructure, nowhere in others), and
the tree is not ours to edit. Both names are made to resolve to the settings bridge
(``cms/local_settings.py``, from config/django/local_settings.py) before the tree's
settings run, so the tree's own hook applies it at the point the tree intends: every
value computed after the hook (ALLOWED_HOSTS, SSL_FRONTEND_HOST, middleware) sees it.
The operator's custom/local_settings.py is executed by the bridge itself.
"""

import sys

from cms import local_settings as _bridge

sys.modules["custom.local_settings"] = _bridge

from cms.settings import *  # noqa: E402,F403

if not globals().get("MEDIACMS_CONTAINER_BRIDGE"):  # a tree with no override hook
    globals().update({name: getattr(_bridge, name) for name in dir(_bridge) if name.isupper()})

# The tree's URLs, behind the one view of ours nginx asks before an upload's body
# (cms/stack_urls.py, from config/django/stack_urls.py).
TREE_URLCONF = globals().get("ROOT_URLCONF", "cms.urls")
ROOT_URLCONF = "cms.stack_urls"

# The images' periodic look for stuck encodings (cms/stack_tasks.py, from
# config/django/stack_tasks.py): every worker imports it, beat sends it to the short queue.
from cms.stack_tasks import EVERY_SECONDS as _every  # noqa: E402
from cms.stack_tasks import NAME as _stuck  # noqa: E402

CELERY_IMPORTS = (*globals().get("CELERY_IMPORTS", ()), _stuck.rsplit(".", 1)[0])
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "stack-stuck-encodings": {"task": _stuck, "schedule": float(_every),
                              "options": {"queue": "short_tasks"}},
}  # fmt: skip
