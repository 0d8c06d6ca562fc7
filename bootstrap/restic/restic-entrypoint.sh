#!/bin/sh
# ssh (restic's sftp: backend) stops when the uid it runs as has no passwd entry, and
# the container runs as the operator's uid, unknown to the image: nss_wrapper gives it
# one, in /tmp, the only writable place.
set -eu
if ! getent passwd "$(id -u)" >/dev/null; then
  printf 'restic:x:%s:%s:restic:/tmp:/usr/sbin/nologin\n' "$(id -u)" "$(id -g)" >/tmp/passwd
  NSS_WRAPPER_PASSWD=/tmp/passwd NSS_WRAPPER_GROUP=/etc/group
  LD_PRELOAD=libnss_wrapper.so
  export NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP LD_PRELOAD
fi
exec restic "$@"
