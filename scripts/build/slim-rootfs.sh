#!/bin/sh
# Assemble a minimal root filesystem at DEST from Debian packages installed in this
# build stage, for a `FROM scratch` image:
#   slim-rootfs DEST PACKAGE...
# DEST receives the files of the PACKAGEs named, plus every package owning a shared
# library that their programs load (found with ldd, so the closure is exact), and
# nothing else: no apt, dpkg, perl or coreutils. Documentation other than copyright
# files, man pages, locales and glibc's gconv modules are left out. DEST's
# /var/lib/dpkg/status lists exactly the packages copied, with their versions, so
# image scanners still see what is inside. When busybox is among the packages, its
# applets (sh, ls, id, ...) are linked in /usr/bin. Every program is checked to find
# all its libraries inside DEST before this script succeeds.
set -eu
dest=$1
shift
[ $# -gt 0 ] || { echo "usage: slim-rootfs DEST PACKAGE..." >&2; exit 2; }

# The merged-/usr layout as this stage has it (bin -> usr/bin, lib64 only on amd64, ...).
mkdir -p "$dest/usr/bin" "$dest/usr/sbin" "$dest/usr/lib" "$dest/var/lib/dpkg"
for link in /bin /sbin /lib /lib32 /lib64 /libx32; do
    if [ -L "$link" ]; then cp -a "$link" "$dest$link"; fi
done

# Programs (ELF files in the bin/sbin folders) of the packages named.
programs=$(dpkg -L "$@" | grep -E '^/usr/s?bin/[^/]+$' | sort -u | while read -r path; do
    if [ -f "$path" ] && [ ! -L "$path" ] && head -c 4 "$path" | grep -q 'ELF'; then
        echo "$path"
    fi
done)
[ -n "$programs" ] || { echo "slim-rootfs: no programs in $*" >&2; exit 1; }

# Their libraries (transitively: ldd resolves the whole tree) and the packages owning them.
libraries=$(for program in $programs; do ldd "$program" || true; done \
    | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
owners=$(for library in $libraries; do
    dpkg -S "$(readlink -f "$library")" | grep -v '^diversion' | cut -d: -f1 || true
done | sort -u)
loader=$(echo "$libraries" | grep -E '/ld-linux[^/]*\.so' | head -n 1)
packages=$(printf '%s\n' "$@" "$owners" | sort -u)

# Their files: directories (for ownership and modes), files and symlinks, trimmed.
listing=$(mktemp)
# shellcheck disable=SC2086 # word splitting of the package list is intended
dpkg -L $packages | sort -u | while read -r path; do
    case $path in
    /. | /usr/share/doc/*/copyright) ;;
    /usr/share/doc/* | /usr/share/man | /usr/share/man/* | /usr/share/info | /usr/share/info/* \
        | /usr/share/locale | /usr/share/locale/* | /usr/share/lintian | /usr/share/lintian/* \
        | /usr/share/bug | /usr/share/bug/* | */gconv | */gconv/*)
        continue ;;
    esac
    if [ -e "$path" ] || [ -L "$path" ]; then
        echo "${path#/}"
    fi
done >"$listing"
tar -C / --no-recursion -cf - -T "$listing" | tar -C "$dest" --keep-directory-symlink -xpf -
rm -f "$listing"

# Accounts and name service switch, as the stage has them (not package-owned files).
for file in /etc/passwd /etc/group /etc/nsswitch.conf /etc/os-release; do
    if [ -e "$file" ]; then cp -a "$file" "$dest$file"; fi
done

# shellcheck disable=SC2086
dpkg-query -s $packages >"$dest/var/lib/dpkg/status"

if [ -x "$dest/usr/bin/busybox" ]; then
    for applet in $("$dest/usr/bin/busybox" --list); do
        if [ ! -e "$dest/usr/bin/$applet" ] && [ ! -e "$dest/usr/sbin/$applet" ]; then
            ln -s busybox "$dest/usr/bin/$applet"
        fi
    done
fi

# Every program must find every library inside DEST (the dynamic loader runs there).
missing=0
for program in $programs; do
    if chroot "$dest" "$loader" --list "$program" 2>&1 \
        | grep -E 'not found|No such file'; then
        echo "slim-rootfs: $program misses libraries in $dest" >&2
        missing=1
    fi
done
[ "$missing" = 0 ]
echo "slim-rootfs: $(echo "$packages" | wc -l) packages, $(du -sh "$dest" | cut -f1) in $dest:" \
    "$(echo "$packages" | tr '\n' ' ')"
