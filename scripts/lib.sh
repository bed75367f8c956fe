# Shared by scripts/demo, scripts/test, scripts/publish-aot and bench/run: install what is missing (the tunnel's tools
# and the Debian packages named), quietly; on failure apt's own error is shown and the call fails.
ensure_packages() {
  local missing=()
  command -v wg >/dev/null || missing+=(wireguard-tools)
  command -v wireguard-go >/dev/null || missing+=(wireguard-go)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v curl >/dev/null || missing+=(curl)
  [ -x /usr/bin/python3 ] || missing+=(python3)
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "Installing ${missing[*]} ..."
    local log; log=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
      echo "Could not install ${missing[*]}:" >&2; tail -n 20 "$log" >&2; rm -f "$log"
      return 1
    fi
    rm -f "$log"
  fi
}

require_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "This needs root (network namespaces and WireGuard): run it with sudo." >&2
    exit 1
  fi
}

# ---- Containers (scripts/images, scripts/test, scripts/demo --kubernetes) ----
# Rootful podman runs containers on these machines only with runc, the cgroupfs manager and ulimits no higher than the
# caller's (crun refuses the hybrid cgroup layout; raising a limit is not permitted). Every podman call of ours goes
# through the config file podman_env writes. Caches live under WORMHOLE_CACHE (default /var/cache/wormhole), which CI may
# keep between runs: without it, the Debian base is made again (debootstrap, a few minutes).
WORMHOLE_CACHE=${WORMHOLE_CACHE:-/var/cache/wormhole}
WORMHOLE_BASE_IMAGE=localhost/wormhole-base:bookworm
# What the images need from Debian (docker/rootfs.sh copies the files it uses out of this base) and perl-base, which
# minbase has anyway, for the tests' HTTP backend.
WORMHOLE_BASE_PACKAGES=iproute2,wireguard-tools,wireguard-go,ca-certificates

# Exports CONTAINERS_CONF, pointing at a config file written for this machine's limits.
podman_env() {
  local n p conf="$WORMHOLE_CACHE/containers.conf"
  # nproc at most pid_max: more processes cannot exist, and some kernels (gVisor) refuse a larger limit.
  n=$(_wormhole_ulimit -Hn 65536); p=$(_wormhole_ulimit -Hu "$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 32768)")
  mkdir -p "$WORMHOLE_CACHE"
  cat >"$conf.tmp" <<CONF
# Written by scripts/lib.sh (podman_env): runc, cgroupfs, ulimits within the caller's hard limits.
[containers]
default_ulimits = ["nofile=$n:$n", "nproc=$p:$p"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  mv "$conf.tmp" "$conf"
  export CONTAINERS_CONF="$conf"
}

# _wormhole_ulimit FLAG CAP: the caller's limit (ulimit FLAG), at most CAP.
_wormhole_ulimit() {
  local v; v=$(ulimit "$1")
  if [ "$v" = unlimited ] || [ "$v" -gt "$2" ]; then echo "$2"; else echo "$v"; fi
}

# Installs podman, runc and debootstrap when missing (as root).
ensure_podman() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ ${#missing[@]} -eq 0 ] || ensure_packages "${missing[@]}"
}

# The Debian bookworm base of the images, made locally: debootstrap (minbase plus WORMHOLE_BASE_PACKAGES) into
# WORMHOLE_CACHE/bookworm, imported as WORMHOLE_BASE_IMAGE. Nothing is pulled from a registry. The root filesystem and
# the downloaded packages stay in the cache, so a later run only imports (seconds) or re-runs debootstrap from cached
# packages. Needs podman_env first.
ensure_base_image() {
  podman image exists "$WORMHOLE_BASE_IMAGE" && return 0
  local dir="$WORMHOLE_CACHE/bookworm" stamp="$WORMHOLE_CACHE/bookworm.packages" log
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$WORMHOLE_BASE_PACKAGES" ]; then
    echo "Making the Debian bookworm base with debootstrap (cached in $WORMHOLE_CACHE) ..."
    rm -rf "$dir" "$stamp"; mkdir -p "$WORMHOLE_CACHE/debs"
    log=$(mktemp)
    if ! debootstrap --variant=minbase --include="$WORMHOLE_BASE_PACKAGES" --cache-dir="$WORMHOLE_CACHE/debs" \
         bookworm "$dir" "${WORMHOLE_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$log" 2>&1; then
      echo "debootstrap failed:" >&2; tail -n 20 "$log" >&2; rm -f "$log"; rm -rf "$dir"
      return 1
    fi
    rm -f "$log"
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
    echo "$WORMHOLE_BASE_PACKAGES" >"$stamp"
  fi
  tar -C "$dir" -c . | podman import --quiet \
    --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD=["/bin/bash"]' - "$WORMHOLE_BASE_IMAGE" >/dev/null
}
