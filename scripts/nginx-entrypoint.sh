#!/bin/sh
# Entry point of the nginx image: writes the host names this nginx answers for, the
# load balancers it believes and the media gate's cache lifetime, from the container's
# environment (saying so on stderr), then runs the command (nginx). The image is built once
# and run under many names, so the names cannot be baked in.
#
#   FRONTEND_HOST   the site's URL (http://localhost by default); its host name
#   ALLOWED_HOSTS   optional further names, comma-separated (".example.org" also
#                   matches every subdomain, as in Django)
#   TRUSTED_PROXIES optional load balancers (addresses or CIDR networks, comma-
#                   separated) whose X-Forwarded-For and -Proto nginx believes
#   MEDIA_GATE_CACHE_SECONDS  how long the media gate's decisions are kept (10; 0-300)
#
# A request for any other name gets 400 from nginx and never reaches the app.
set -euf  # -f: no globbing, a "*" in ALLOWED_HOSTS stays a "*" (and is refused)

out=/tmp/nginx/server-names.conf
names=""

add_name() {
    case $1 in
        "" | *[!A-Za-z0-9.:[\]-]*)
            echo "nginx-entrypoint: '$1' is not a host name (FRONTEND_HOST / ALLOWED_HOSTS)" >&2
            exit 1 ;;
    esac
    names="$names $1"
}

host=${FRONTEND_HOST:-http://localhost}
host=${host#*://}   # scheme
host=${host%%/*}    # path
host=${host##*@}    # user info
case $host in
    \[*) host="${host%%]*}]" ;;  # [IPv6]:port
    *) host=${host%%:*} ;;       # name:port
esac
add_name "$host"

old_ifs=$IFS
IFS=', '
for name in ${ALLOWED_HOSTS:-}; do
    add_name "$name"
done
IFS=$old_ifs

mkdir -p "${out%/*}"
echo "server_name$names;" > "$out"

# nginx looks the app's name up again while it runs (web scaled, updated, moved on
# Swarm), through the DNS server the engine gave this container.
dns=""
while read -r key value _; do
    if [ "$key" = nameserver ] && [ -z "$dns" ]; then dns=$value; fi
done < /etc/resolv.conf
case $dns in
    *:*) dns="[$dns]" ;;
    "") echo "nginx-entrypoint: no nameserver in /etc/resolv.conf" >&2; exit 1 ;;
esac
echo "resolver $dns valid=5s ipv6=off;" > "${out%/*}/resolver.conf"

# The load balancers whose X-Forwarded-For / -Proto are believed on the published port:
# TRUSTED_PROXIES, addresses or networks (CIDR), comma-separated; none by default.
proxies=""
IFS=', '
for net in ${TRUSTED_PROXIES:-}; do
    case $net in
        *[!0-9A-Fa-f.:/]* | */*/* | /* | */)
            echo "nginx-entrypoint: '$net' is not an address or a network (TRUSTED_PROXIES)" >&2
            exit 1 ;;
    esac
    proxies="$proxies$net 1;
"
done
IFS=$old_ifs
printf '%s' "$proxies" > "${out%/*}/trusted-proxies.conf"

# How long nginx keeps the media gate's decisions (media-gate-on.conf): whole seconds
# from 0 (no cache: the app is asked on every request) to 300.
gate=${MEDIA_GATE_CACHE_SECONDS:-10}
case $gate in
    "" | *[!0-9]* | ????*) gate=invalid ;;
esac
if [ "$gate" = invalid ] || [ "$gate" -gt 300 ]; then
    echo "nginx-entrypoint: MEDIA_GATE_CACHE_SECONDS='${MEDIA_GATE_CACHE_SECONDS-}' is not a whole number of seconds from 0 to 300" >&2
    exit 1
fi
if [ "$gate" -eq 0 ]; then
    echo "uwsgi_cache off;"
else
    echo "uwsgi_cache media_gate; uwsgi_cache_valid 200 204 401 403 ${gate}s;"
fi > "${out%/*}/media-gate-cache.conf"
# Not in maintenance (nginx-maintenance turns it on and off while nginx runs).
: > "${out%/*}/maintenance.conf"
echo "nginx-entrypoint: media gate decisions kept ${gate}s" >&2
echo "nginx-entrypoint: answering for$names; trusted proxies: ${TRUSTED_PROXIES:-none}" >&2

# nginx runs as this shell's child, not in its place. The engine tears the container's
# network down as soon as its first process ends, and an nginx that quit gracefully
# (SIGQUIT: `invoke upgrade` or `restart --service nginx` behind the HTTPS overlay, a
# Swarm update) may leave the last bytes of its responses in the kernel's send buffers:
# a download ending then would lose them. So every signal goes on to nginx, and once it
# has quit this shell waits until no connection has anything left to send (30 s at
# most), then ends with nginx's status. After SIGTERM or SIGINT (fast
# shutdown: stop now) it does not wait.
"$@" &
child=$!
last=
for signal in HUP USR1 USR2 WINCH QUIT TERM INT; do
    # shellcheck disable=SC2064 # the signal's name and nginx's pid, fixed now
    trap "last=$signal; kill -$signal $child 2>/dev/null || true" "$signal"
done
status=
while [ -z "$status" ]; do
    status=0
    wait "$child" || status=$?
    # a signal ends `wait` early (status above 128) while nginx goes on
    if kill -0 "$child" 2>/dev/null; then status=; fi
done
unsent() {
    # /proc/net/tcp*: field 4 the state (04 FIN_WAIT1, 0B CLOSING, 09 LAST_ACK: data or
    # the FIN still unacknowledged), field 5 tx_queue:rx_queue in hexadecimal
    awk 'FNR > 1 && ($4 == "04" || $4 == "0B" || $4 == "09" || $5 !~ /^0+:/) { n++ }
         END { exit n ? 0 : 1 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
case $last in TERM | INT) exit "$status" ;; esac
tries=150
while [ "$tries" -gt 0 ] && unsent; do
    sleep 0.2
    tries=$((tries - 1))
done
exit "$status"
