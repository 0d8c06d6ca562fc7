#!/bin/sh
# One-shot job of the `migrations` service; web, beat and the workers start only after
# it exits 0. Safe to run any number of times:
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

echo "migrations: applying Django migrations"
python manage.py migrate --noinput

fresh=$(python manage.py shell -c \
    'from users.models import User; print("no" if User.objects.exists() else "yes")' | tail -n 1)

if [ "$fresh" = yes ]; then
    echo "migrations: fresh database, loading fixtures"
    python manage.py loaddata fixtures/encoding_profiles.json
    python manage.py loaddata fixtures/categories.json

    if [ -n "${ADMIN_PASSWORD_FILE:-}" ]; then  # a Swarm secret
        ADMIN_PASSWORD=$(cat "$ADMIN_PASSWORD_FILE")
    fi
    admin_user=${ADMIN_USER:-admin}
    admin_email=${ADMIN_EMAIL:-admin@localhost}
    generated=no
    if [ -z "${ADMIN_PASSWORD:-}" ]; then
        ADMIN_PASSWORD=$(python -c 'import secrets; print(secrets.token_urlsafe(18))')
        generated=yes
    fi
    DJANGO_SUPERUSER_PASSWORD=$ADMIN_PASSWORD python manage.py createsuperuser \
        --no-input --username "$admin_user" --email "$admin_email"
    if [ "$generated" = yes ]; then
        echo "migrations: created admin '$admin_user' with generated password: $ADMIN_PASSWORD"
        echo "migrations: this password is shown once; change it with 'invoke set-admin-password'"
    else
        echo "migrations: created admin '$admin_user' with the password from ADMIN_PASSWORD"
    fi
else
    echo "migrations: existing database, fixtures and admin left as they are"
fi
echo "migrations: done"
