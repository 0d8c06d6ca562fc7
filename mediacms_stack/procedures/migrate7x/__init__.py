"""Move a monolithic MediaCMS 7.x deployment into this stack without writing to it.

The 7.x layout: one folder holding the MediaCMS tree (bind-mounted into one container
run by supervisord) with its ``docker-compose.yaml``, the media in ``media_files/``,
overrides in ``cms/local_settings.py``, maybe a ``.secret_key``, and the PostgreSQL
data bind-mounted from ``../postgres_data`` (any major version).

What :func:`migrate` does, in order, each step printed with the command it runs:

1. reads the old folder and prints the plan (``--dry-run`` stops here);
2. stops the old deployment's application containers, so nothing changes under it;
3. dumps the old database through the old ``db`` service (started for the dump if it
   was stopped, stopped again afterwards), or takes a dump the operator gives;
4. copies ``media_files/`` into the new media volume, dotfiles included, owned by 33;
5. writes ``custom/local_settings.py`` from the old overrides (without what the new
   layout owns) and carries SECRET_KEY (and literal FRONTEND_HOST/PORTAL_NAME) into
   ``.env``;
6. restores the dump into the new PostgreSQL 17, checks the row count of every table
   against the old database, copies the logged-in sessions (7.x keeps them in Redis)
   into the new Redis with their expiry, then starts the stack (migrations run, all
   healthy);
7. checks every media file's sha256 and owner in the volume against the old folder.

The old folder and its database files are only read, so rolling back is starting the
old deployment again (``docker compose up -d`` in its folder).

The modules, one job each: :mod:`.settings` (the old ``cms/local_settings.py`` read
through ``ast``), :mod:`.legacy` (the old deployment), :mod:`.plan` (what will be done,
decided up front), :mod:`.checks` (what would refuse), :mod:`.db`, :mod:`.media` and
:mod:`.sessions` (the data moved and checked), :mod:`.carry` (``custom/`` and ``.env``
written) and :mod:`.procedure` (:func:`migrate`: the steps in order, timed).
"""

from .db import check_given_dump, dump_old_database
from .legacy import OldDeployment
from .media import MediaFolder, copy_media, parse_checksums
from .plan import Plan, make_plan
from .procedure import migrate
from .sessions import SESSION_KEYS, carry_sessions
from .settings import SettingsPlan, secret_key, split_settings

__all__ = [
    "SESSION_KEYS",
    "MediaFolder",
    "OldDeployment",
    "Plan",
    "SettingsPlan",
    "carry_sessions",
    "check_given_dump",
    "copy_media",
    "dump_old_database",
    "make_plan",
    "migrate",
    "parse_checksums",
    "secret_key",
    "split_settings",
]
