#!/bin/sh
# pip install inside the image build, trusting the build's extra CA bundle when one
# was handed in as the BuildKit secret "ca_bundle" (TLS-intercepting proxies).
set -eu
if [ -s /run/secrets/ca_bundle ]; then
    export PIP_CERT=/run/secrets/ca_bundle
fi
exec pip install --no-compile --disable-pip-version-check "$@"
