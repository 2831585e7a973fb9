#!/bin/sh
# Entry point of the nginx container in compose.yaml (works with the official nginx image and
# with the local Debian-based one from deploy/build-base-images.sh).
#
#   natter-nginx.sh run      render the upstream, start nginx, keep the upstream current
#   natter-nginx.sh health   exit 0 when nginx answers its own /nginx-health
#
# Why not `resolver` + a variable in proxy_pass: that gives round robin, not least_conn, and
# Docker's embedded DNS (127.0.0.11) and podman's aardvark-dns (the network's gateway address)
# live at different addresses. `server gateway:8000 resolve;` inside an upstream needs nginx
# 1.27.3 or newer. So this script asks the container's own resolver (getent, which follows
# /etc/resolv.conf on both engines) for every address of the service name, writes one `server`
# line per address, and reloads nginx (graceful: open WebSockets stay on the old workers) when
# the set changes: after `--scale gateway=N`, and after a gateway restarted with a new address.
#
# Environment: NATTER_UPSTREAM_HOST (gateway), NATTER_UPSTREAM_PORT (8000),
# NATTER_RESOLVE_INTERVAL (seconds between lookups, 2).
set -eu

CONF_DIR="$(cd "$(dirname "$0")" && pwd)"
CONF="$CONF_DIR/nginx.conf"
STATE=/tmp/natter-nginx
HOST="${NATTER_UPSTREAM_HOST:-gateway}"
PORT="${NATTER_UPSTREAM_PORT:-8000}"
INTERVAL="${NATTER_RESOLVE_INTERVAL:-2}"

log() { echo "natter-nginx: $*" >&2; }

addresses() {  # every IPv4 address of $HOST, sorted, one per line (nothing while unresolvable)
  getent ahostsv4 "$HOST" 2>/dev/null | awk '{ print $1 }' | sort -u
}

render() {  # the upstream block for the addresses given on stdin
  echo "upstream natter_gateways {"
  echo "    least_conn;"
  echo "    zone natter_gateways 64k;"
  found=no
  while read -r address; do
    [ -n "$address" ] || continue
    found=yes
    echo "    server $address:$PORT max_fails=1 fail_timeout=2s;"
  done
  if [ "$found" = no ]; then
    echo "    server 127.0.0.1:9 down;  # no address for $HOST yet: 502 until one appears"
  fi
  echo "}"
}

watch_upstream() {
  current="$(addresses | tr '\n' ' ')"
  while sleep "$INTERVAL"; do
    next="$(addresses | tr '\n' ' ')"
    # An empty answer is kept out: container DNS servers drop queries now and then (aardvark-dns
    # while it reloads), and with no gateway left the old addresses fail just the same.
    if [ -z "$next" ] || [ "$next" = "$current" ]; then
      continue
    fi
    # shellcheck disable=SC2086  # one address per word
    printf '%s\n' $next | render >"$STATE/upstream.conf.new"
    mv "$STATE/upstream.conf.new" "$STATE/upstream.conf"
    if nginx -c "$CONF" -s reload; then
      log "gateways now: ${next:-none} (was: ${current:-none}); reloaded"
      current="$next"
    else
      log "reload failed; will retry"
    fi
  done
}

case "${1:-run}" in
  run)
    mkdir -p "$STATE"
    addresses | render >"$STATE/upstream.conf"
    log "gateways: $(addresses | tr '\n' ' ')"
    nginx -c "$CONF" -t -q
    watch_upstream &
    exec nginx -c "$CONF" -g "daemon off;"
    ;;
  health)
    url=http://127.0.0.1:8080/nginx-health
    if command -v curl >/dev/null 2>&1; then  # the official image
      exec curl -fsS -o /dev/null --max-time 3 "$url"
    elif command -v wget >/dev/null 2>&1; then
      exec wget -q -O /dev/null -T 3 "$url"
    fi
    # The local Debian minbase image has neither: bash's /dev/tcp.
    exec bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080 \
      && printf "GET /nginx-health HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 \
      && head -n 1 <&3 | grep -q " 200 "'
    ;;
  *)
    log "usage: natter-nginx.sh run|health"
    exit 2
    ;;
esac
