#!/bin/sh
# docker/rootfs.sh ROOT EXECUTABLE... — assembles an image's whole filesystem under ROOT from the Debian it runs in
# (the Dockerfiles' "rootfs" stage; the final stage is FROM scratch and copies ROOT). ROOT gets:
#   - the executables named (paths in this stage, copied to the same paths under ROOT), wg, wireguard-go and ip, and every shared library they load (ldd);
#   - OpenSSL's libssl and libcrypto, which .NET loads at run time (TLS to the Kubernetes API, AES-GCM for pairing);
#   - the CA certificates (one bundle), /etc/iproute2, a root-only passwd and group, nsswitch.conf ("hosts: files dns":
#     names a pod gets from hostAliases are in /etc/hosts);
#   - the directories the chart mounts volumes on (/tmp, /storage, /run/wireguard) and the usual merged-/usr links.
# Nothing a shell session needs: no shell, no coreutils, no package manager. Installs wireguard-tools, wireguard-go,
# iproute2 and ca-certificates with apt when the base lacks them (a public Debian image; the local base has them).
set -eu
root=$1
shift

if ! command -v wg >/dev/null || ! command -v wireguard-go >/dev/null || ! command -v ip >/dev/null \
   || [ ! -f /etc/ssl/certs/ca-certificates.crt ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wireguard-tools wireguard-go iproute2 ca-certificates
fi

mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib" "$root/usr/lib64" "$root/usr/local/bin" "$root/etc/ssl/certs" \
  "$root/usr/lib/ssl" "$root/run/wireguard" "$root/var" "$root/storage" "$root/tmp" "$root/proc" "$root/sys" "$root/dev"
for link in bin sbin lib lib64; do [ -e "$root/$link" ] || ln -s "usr/$link" "$root/$link"; done
ln -sfn ../run "$root/var/run"
chmod 1777 "$root/tmp"
chmod 0700 "$root/storage"

# copy FILE: FILE (symbolic links followed) at the same path under ROOT, once.
copy() {
  [ -e "$root$1" ] || { mkdir -p "$root$(dirname "$1")"; cp -L "$1" "$root$1"; }
}

# with_libraries FILE: FILE and the shared libraries ldd names for it (the dynamic loader included).
with_libraries() {
  copy "$1"
  ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do copy "$lib"; done
}

for tool in wg wireguard-go ip; do with_libraries "$(command -v "$tool")"; done
for exe in "$@"; do with_libraries "$exe"; done
for lib in libssl.so.3 libcrypto.so.3; do
  path=$(ldconfig -p | awk -v lib="$lib" '$1 == lib && /x86-64/ { print $NF; exit }')
  [ -n "$path" ] || { echo "rootfs.sh: $lib not found" >&2; exit 1; }
  with_libraries "$path"
done

cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
ln -sfn /etc/ssl/certs "$root/usr/lib/ssl/certs"
ln -sfn /etc/ssl/certs/ca-certificates.crt "$root/usr/lib/ssl/cert.pem"
[ ! -d /etc/iproute2 ] || cp -r /etc/iproute2 "$root/etc/iproute2"
printf 'root:x:0:0:root:/tmp:/nonexistent\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
: >"$root/etc/hosts"
: >"$root/etc/resolv.conf"
: >"$root/etc/hostname"
