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
