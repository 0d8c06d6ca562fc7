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
# started after the reload run and the old ones no longer accept: every request from
# then on gets the new answer (the old workers end the requests they hold, then go).
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
command_of() { cat "/proc/$1/cmdline" 2>/dev/null || true; }
before=" $(workers) "
nginx -t -q
nginx -s reload
# Done when a worker started after the reload runs and no worker from before still
# accepts: each says "shutting down" once it has closed its listening sockets (or it is
# gone). Until then an old worker could take a new connection and answer the old way.
tries=100  # 10 s
while [ "$tries" -gt 0 ]; do
    new=no
    old=no
    for pid in $(workers); do
        case $(command_of "$pid") in
            *"shutting down"*) ;;
            *"worker process"*)
                case $before in
                    *" $pid "*) old=yes ;;
                    *) new=yes ;;
                esac ;;
        esac
    done
    if [ "$new" = yes ] && [ "$old" = no ]; then
        echo "nginx-maintenance: $1"
        exit 0
    fi
    sleep 0.1
    tries=$((tries - 1))
done
echo "nginx-maintenance: the reload did not end within 10 s" >&2
exit 1
