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
#   FRONT_LISTENERS the HTTPS overlay's fd-holder (docker-compose-cert.yaml): nginx takes
#                   ports 80 and 443 from it and ends TLS with the certificate the acme
#                   service keeps under CERTIFICATES
#
# A request for any other name gets 400 from nginx and never reaches the app.
set -euf  # -f: no globbing, a "*" in ALLOWED_HOSTS stays a "*" (and is refused)

# Behind the HTTPS overlay, first take the listening sockets of ports 80 and 443 from the
# listeners service and run this script again with them open (S6_FD_0, S6_FD_1, ...).
# Its generation (a new one at each of its starts) is read before: should it change
# after, the watch below sees that the sockets are stale and nginx starts again.
if [ -n "${FRONT_LISTENERS:-}" ] && [ -z "${S6_FD_0:-}" ]; then
    generation=${FRONT_LISTENERS%/*}/generation
    tries=300
    until [ -s "$generation" ] && s6-fdholder-list -t 1000 "$FRONT_LISTENERS" > /dev/null 2>&1; do
        tries=$((tries - 1))
        if [ "$tries" -eq 0 ]; then
            echo "nginx-entrypoint: no listeners at $FRONT_LISTENERS after 60 s (is the listeners service up?)" >&2
            exit 1
        fi
        sleep 0.2
    done
    FRONT_GENERATION=$(cat "$generation")
    export FRONT_GENERATION
    exec s6-fdholder-getdump -t 5000 "$FRONT_LISTENERS" "$0" "$@"
fi

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
# Behind the HTTPS overlay only FRONTEND_HOST's name has a certificate: another name
# would be shown it (a browser's error) or sent to it; they get 400 and no handshake.
if [ -n "${FRONT_LISTENERS:-}" ] && [ -n "${ALLOWED_HOSTS:-}" ]; then
    echo "nginx-entrypoint: ALLOWED_HOSTS not answered behind the HTTPS overlay (its certificate is FRONTEND_HOST's alone)" >&2
else
    IFS=', '
    for name in ${ALLOWED_HOSTS:-}; do
        add_name "$name"
    done
fi
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

# The HTTPS overlay: the sockets taken above go to nginx (NGINX: its own way of
# inheriting listeners), with the servers of ports 80 and 443 (front.conf) and, once the
# acme service has it, the site's certificate (front-tls.conf, copied to this tmpfs).
: > "${out%/*}/front-tls.conf"
mkdir -p "${out%/*}/front" "${out%/*}/tls"
tls=${out%/*}/tls
tls_signature=
tls_refused=
tls_update() {  # 0 when a new certificate is in place (nginx must reload)
    # Caddy's storage: caddy/certificates/<the CA's folder>/name/name.crt and .key (the
    # newest, should the CA have changed); Caddy writes names in lower case
    name=$(echo "$host" | tr "[:upper:]" "[:lower:]")
    set +f
    # shellcheck disable=SC2012 # host names only (checked above), newest first
    crt=$(ls -t "${CERTIFICATES:-/run/certificates}"/caddy/certificates/*/"$name/$name.crt" 2>/dev/null | head -n 1)
    set -f
    [ -n "$crt" ] || return 1
    signature=$(cat "$crt" "${crt%.crt}.key" 2>/dev/null | md5sum) || return 1
    [ "$signature" != "$tls_signature" ] || return 1
    # The pair in place only once nginx accepts it; otherwise the one before stays (or
    # none: handshakes refused), and it is looked at again at the next look (a pair
    # caught while Caddy writes it is whole by then).
    for file in site.crt site.key; do
        if [ -e "$tls/$file" ]; then cp -p "$tls/$file" "$tls/$file.kept"; else rm -f "$tls/$file.kept"; fi
    done
    cp "${out%/*}/front-tls.conf" "$tls/front-tls.conf.kept"
    (umask 077 && cp "$crt" "$tls/site.crt" && cp "${crt%.crt}.key" "$tls/site.key") &&
    printf 'listen 443 ssl;\nhttp2 on;\nssl_certificate %s;\nssl_certificate_key %s;\n' \
        "$tls/site.crt" "$tls/site.key" > "${out%/*}/front-tls.conf" &&
    refusal=$(env -u NGINX nginx -t -q 2>&1) && {
        tls_signature=$signature
        echo "nginx-entrypoint: certificate for $host from $crt" >&2
        return 0
    }
    for file in site.crt site.key; do
        if [ -e "$tls/$file.kept" ]; then mv "$tls/$file.kept" "$tls/$file"; else rm -f "$tls/$file"; fi
    done
    mv "$tls/front-tls.conf.kept" "${out%/*}/front-tls.conf"
    if [ "$signature" != "$tls_refused" ]; then
        echo "nginx-entrypoint: $crt not taken (nginx -t: ${refusal:-copy failed}); the one before stays" >&2
        tls_refused=$signature
    fi
    return 1
}
if [ -n "${S6_FD_0:-}" ]; then
    # exactly the two sockets of the listeners service, or nothing: nginx would bind a
    # missing one itself, in its own network, where no client reaches it
    listeners=
    ids=
    id=
    i=0
    while eval "fd=\${S6_FD_$i:-} id=\${S6_FDID_$i:-}" && [ -n "$fd" ]; do
        listeners="$listeners$fd;"
        ids="$ids $id"
        # nginx takes an inherited socket as it is: a blocking one (O_NONBLOCK, 04000,
        # unset) lets a worker wait in accept() with its requests frozen
        flags=$(sed -n 's/^flags:[[:space:]]*//p' "/proc/$$/fdinfo/$fd" 2>/dev/null) || flags=
        if [ -n "$flags" ] && [ $((0$flags & 04000)) -eq 0 ]; then
            echo "nginx-entrypoint: the listeners service holds $id as a blocking socket (its image is older than this nginx): requests can stall until it is recreated, which \`invoke up\` does" >&2
        fi
        i=$((i + 1))
    done
    if [ "$ids" != " fd:http fd:https" ] && [ "$ids" != " fd:https fd:http" ]; then
        echo "nginx-entrypoint: the listeners service gave '${ids# }', not fd:http and fd:https" >&2
        sleep 1
        exit 1
    fi
    NGINX=$listeners
    export NGINX
    echo "$FRONT_GENERATION" > "${out%/*}/generation"  # the health check compares it
    ln -sf /etc/nginx/front.conf "${out%/*}/front/servers.conf"
    tls_update || echo "nginx-entrypoint: no certificate for $host yet: HTTPS handshakes are refused until the acme service has one" >&2
    echo "nginx-entrypoint: ports 80 and 443 taken from $FRONT_LISTENERS (sockets $listeners)" >&2
fi
echo "nginx-entrypoint: answering for$names; trusted proxies: ${TRUSTED_PROXIES:-none}" >&2

# nginx runs as this shell's child, not in its place. The engine tears the container's
# network down as soon as its first process ends, and an nginx that quit gracefully
# (SIGQUIT: a Swarm update) may leave the last bytes of its responses in the kernel's
# send buffers: a download ending then would lose them. (Behind the HTTPS overlay the
# clients' connections belong to the listeners' network, which stays: nothing to wait
# for there.) So every signal goes on to nginx, and once it
# has quit this shell waits until no connection has anything left to send (30 s at
# most), then ends with nginx's status. After SIGTERM or SIGINT (fast
# shutdown: stop now) it does not wait.
"$@" &
child=$!
last=
# (not WINCH: nginx given its listeners takes itself for a daemon and would stop its
# workers for good)
for signal in HUP USR1 USR2 QUIT TERM INT; do
    # shellcheck disable=SC2064 # the signal's name and nginx's pid, fixed now
    trap "last=$signal; kill -$signal $child 2>/dev/null || true" "$signal"
done
# Behind the HTTPS overlay, every 2 s: a renewed certificate is put in place and nginx
# reloads (no connection is dropped); new sockets at the listeners service (it started
# again) stop nginx, whose restart policy starts it again with them.
if [ -n "${S6_FD_0:-}" ]; then
    (
        while sleep 2 && kill -0 "$child" 2> /dev/null; do
            if [ "$(cat "${FRONT_LISTENERS%/*}/generation" 2> /dev/null)" != "$FRONT_GENERATION" ]; then
                echo "nginx-entrypoint: the listeners service has new sockets: nginx stops to take them" >&2
                kill -TERM "$child"
                exit 0
            fi
            if tls_update; then kill -HUP "$child"; fi
        done
    ) &
fi
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
