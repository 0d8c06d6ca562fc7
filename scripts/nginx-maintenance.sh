#!/bin/sh
# nginx's 503 page for every request but its health check, on or off, from inside the
# nginx container (`invoke upgrade` and its rollback run it through `compose exec`):
#
#   nginx-maintenance on|off
#
# It writes /tmp/nginx/maintenance.conf (included by site.conf; empty when off, and
# written empty by nginx-entrypoint, so a new or restarted nginx is never in maintenance)
# and reloads nginx. Reloaded, not checked per request: the check used to be a stat() of
# a flag file on every request, a tenth of a static file's cost. It returns once workers
# started after the reload run: every request accepted from then on gets the new answer
# (the old workers end the requests they hold, then go).
set -eu

conf=/tmp/nginx/maintenance.conf
case ${1:-} in
    on)
        cat > "$conf.new" <<'EOF'
# written by nginx-maintenance: every request but the health check and the 503 pages
set $maintenance on;
if ($uri ~ "^/(nginx-health$|_unavailable/)") {
    set $maintenance "";
}
if ($maintenance) {
    return 503;
}
EOF
        ;;
    off) : > "$conf.new" ;;
    *) echo "usage: nginx-maintenance on|off" >&2; exit 2 ;;
esac
mv "$conf.new" "$conf"

master=$(cat /tmp/nginx.pid)
workers() { cat "/proc/$master/task/$master/children"; }
before=" $(workers) "
nginx -t -q
nginx -s reload
tries=100  # 10 s
while [ "$tries" -gt 0 ]; do
    for pid in $(workers); do
        case $before in *" $pid "*) continue ;; esac
        case $(cat "/proc/$pid/cmdline" 2>/dev/null) in
            *"worker process"*) echo "nginx-maintenance: $1"; exit 0 ;;
        esac
    done
    sleep 0.1
    tries=$((tries - 1))
done
echo "nginx-maintenance: no new nginx worker 10 s after the reload" >&2
exit 1
