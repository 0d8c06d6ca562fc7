#!/bin/sh
# Prepares this checkout on a stock Debian or Ubuntu: a virtualenv in .venv with the
# project (and, with the argument "test", its test tools) installed. Debian's python3
# has no pip and refuses installs into the system interpreter (PEP 668), so the
# packages go into the virtualenv; python3 and python3-venv come from apt when missing
# (as root, or through sudo). Then: . .venv/bin/activate && invoke init && invoke up
set -eu
cd "$(dirname "$0")/.."
venv=${MEDIACMS_VENV:-.venv}
extra=${1:+[$1]}

missing=""
command -v python3 >/dev/null 2>&1 || missing="python3"
if [ -z "$missing" ] && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    missing="python3-venv"
elif [ -n "$missing" ]; then
    missing="python3 python3-venv"
fi
if [ -n "$missing" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        as_root=""
    elif command -v sudo >/dev/null 2>&1; then
        as_root="sudo"
    else
        echo "install: $missing missing; as root run: apt-get install $missing" >&2
        exit 1
    fi
    echo "[install] apt-get install $missing"
    $as_root apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq --no-install-recommends $missing
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "[install] python3 -m venv $venv"
    python3 -m venv "$venv"
fi
echo "[install] pip install -e .$extra, pinned by constraints/dev.txt (into $venv)"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -c constraints/dev.txt -e ".$extra"
echo "[install] done; next: . $venv/bin/activate && invoke init && invoke up"
