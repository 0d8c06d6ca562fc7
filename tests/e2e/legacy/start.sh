#!/bin/sh
# The legacy monolith's entrypoint (what supervisord did in the 7.x image): migrate,
# first-run data, then Celery (both queues and beat) in the background and uWSGI in front.
set -eu
cd /home/mediacms.io/mediacms
mkdir -p media_files logs
python manage.py migrate --noinput
if [ "$(python manage.py shell -c 'from users.models import User; print(User.objects.exists())' | tail -n 1)" = False ]; then
    python manage.py loaddata fixtures/encoding_profiles.json fixtures/categories.json
    DJANGO_SUPERUSER_PASSWORD=$ADMIN_PASSWORD python manage.py createsuperuser \
        --no-input --username admin --email admin@legacy.example.org
fi
celery -A cms worker -B -Q short_tasks,long_tasks --concurrency 2 \
    --schedule /tmp/celerybeat-schedule --loglevel INFO &
# uWSGI as the image runs it, plus an HTTP listener in place of the monolith's nginx
exec uwsgi --ini /etc/uwsgi/mediacms.ini --http :8000 \
    --static-map /static=/home/mediacms.io/mediacms/static \
    --static-map /media=/home/mediacms.io/mediacms/media_files
