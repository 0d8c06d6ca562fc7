#!/bin/sh
# Every pip install of an image build: pinned, or not at all. Refuses to run unless
# PIP_CONSTRAINT (versions) and PIP_BUILD_CONSTRAINT (what PEP 517 isolated builds
# install) name existing files (constraints/, see the Dockerfile's builder-tools stage).
# Trusts the build's extra CA bundle when one was handed in as the BuildKit secret
# "ca_bundle" (TLS-intercepting proxies). `pip-install --download DIR ...` downloads.
set -eu
for file in ${PIP_CONSTRAINT:-} ${PIP_BUILD_CONSTRAINT:-}; do
    [ -f "$file" ] || { echo "pip-install: constraints file $file is missing" >&2; exit 1; }
done
if [ -z "${PIP_CONSTRAINT:-}" ] || [ -z "${PIP_BUILD_CONSTRAINT:-}" ]; then
    echo "pip-install: PIP_CONSTRAINT and PIP_BUILD_CONSTRAINT must name the pins" >&2
    exit 1
fi
if [ -s /run/secrets/ca_bundle ]; then
    export PIP_CERT=/run/secrets/ca_bundle
fi
if [ "${1:-}" = --download ]; then
    dest=$2
    shift 2
    exec pip download --disable-pip-version-check -d "$dest" "$@"
fi
exec pip install --no-compile --disable-pip-version-check "$@"
