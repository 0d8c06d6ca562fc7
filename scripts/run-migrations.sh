#!/bin/sh
# One-shot job of the `migrations` service; web, beat and the workers start only after
# it exits 0. Safe to run any number of times:
#   0. wait for the database, at most DATABASE_WAIT_SECONDS (default 300): compose starts
#      this job once db is healthy, but Swarm has no depends_on, names db in its DNS only
#      once db is healthy, and a first start there (image pulled, initdb) can take minutes;
#      a refused password ends it at once (waiting would not mend it);
#   1. apply Django migrations;
#   2. on a fresh database (no user yet) load the encoding profiles and categories and
#      create the admin from ADMIN_USER / ADMIN_EMAIL / ADMIN_PASSWORD; an unset
#      ADMIN_PASSWORD gets a random one, printed once here and nowhere else.
# Any failure stops the script with a non-zero status (and so the stack's start).
set -eu

cd /home/mediacms.io/mediacms

# The tree's default media (e.g. userlogos/user.jpg, linked from every page): whatever
# the volume lacks is copied in; files already there, the operator's, are never replaced.
if [ -d /home/mediacms.io/default-media ]; then
    echo "migrations: adding missing default media"
    cp -R --update=none /home/mediacms.io/default-media/. media_files/
fi

# One Python process for all of it: each `manage.py` start imports Django and the whole
# app (seconds of CPU on the real MediaCMS, five of them on a fresh database).
echo "migrations: applying Django migrations"
exec python manage.py shell -c '
import os
import secrets
import time

from django.core.management import call_command
from django.db import OperationalError, connection
from users.models import User

bound = float(os.environ.get("DATABASE_WAIT_SECONDS") or 300)
deadline = time.monotonic() + bound
said = False
while True:
    try:
        connection.ensure_connection()
        break
    except OperationalError as error:
        if "password authentication failed" in str(error):  # waiting will not mend it
            raise SystemExit(f"migrations: the database refused the password: {error}")
        if time.monotonic() > deadline:
            raise SystemExit(f"migrations: the database did not answer in {bound:.0f}s: {error}")
        if not said:
            print(f"migrations: waiting for the database ({str(error).strip()})", flush=True)
            said = True
        time.sleep(2)

call_command("migrate", interactive=False)
if User.objects.exists():
    print("migrations: existing database, fixtures and admin left as they are")
else:
    print("migrations: fresh database, loading fixtures")
    call_command("loaddata", "fixtures/encoding_profiles.json")
    call_command("loaddata", "fixtures/categories.json")
    user = os.environ.get("ADMIN_USER") or "admin"
    email = os.environ.get("ADMIN_EMAIL") or "admin@localhost"
    secret = os.environ.get("ADMIN_PASSWORD_FILE")  # compose and Swarm hand it in as a file
    password = open(secret).read().strip() if secret else os.environ.get("ADMIN_PASSWORD", "")
    generated = not password
    if generated:
        password = secrets.token_urlsafe(18)
    os.environ["DJANGO_SUPERUSER_PASSWORD"] = password
    call_command("createsuperuser", interactive=False, username=user, email=email)
    if generated:
        print(f"migrations: created admin {user!r} with generated password: {password}")
        print("migrations: this password is shown once; change it with invoke set-admin-password")
    else:
        print(f"migrations: created admin {user!r} with the password from ADMIN_PASSWORD")
print("migrations: done", flush=True)
'
