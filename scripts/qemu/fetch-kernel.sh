#!/usr/bin/env bash
# Fetch a stock Debian kernel and busybox-static for the QEMU lane, without installing them on
# the host: `apt-get download` + `dpkg-deb -x` into a cache folder.
#
#   scripts/qemu/fetch-kernel.sh [--arch amd64|arm64] [--series 6.12] [--cache DIR]
#
# Result (DIR defaults to .cache/qemu/<arch>):
#   DIR/vmlinuz        the kernel image (x86 bzImage, arm64 Image)
#   DIR/config         its config
#   DIR/modules/*.ko   the 9p, vsock-loopback and virtio-console modules (those not built in) plus
#                      their dependencies, decompressed,
#                      and DIR/modules/order: the insmod order (dependencies first)
#   DIR/busybox        static busybox
#   DIR/kernel.env     KERNEL_PACKAGE=..., KERNEL_RELEASE=..., BUSYBOX_PACKAGE=..., MODULES=...
#
# The package name is resolved with apt-cache (newest linux-image-<series>.*-<arch>-unsigned), never
# hard-coded: Debian rotates ABI numbers. Idempotent: when DIR/kernel.env names the package apt
# resolves now, nothing is downloaded. Prints `DIR` on stdout as its last line.
#
# A foreign architecture (arm64 on an amd64 host) uses a private apt state under DIR/apt (its own
# package lists, fetched with `apt-get update` once a day), so the host's apt setup is not changed.
# For it the script also extracts DIR/sysroot: libc6, libstdc++6 and libgcc-s1 of that architecture,
# the libraries a dynamically linked guest node needs (ldd cannot inspect foreign binaries).
set -euo pipefail

arch=amd64
series=6.12
cache=
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch="$2"; shift 2 ;;
    --series) series="$2"; shift 2 ;;
    --cache) cache="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "fetch-kernel: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$arch" in amd64|arm64) ;; *) echo "fetch-kernel: --arch must be amd64 or arm64" >&2; exit 2 ;; esac
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${cache:-$root/.cache/qemu/$arch}"
mkdir -p "$cache"

# Modules the guest /init may load (names as in modules.dep); dependencies are added below.
# virtio_console carries the arm64 guest's status port (lib/qemu/args.ts); built in on amd64.
want_modules="9p 9pnet_virtio vsock_loopback virtio_console"

apt_opts=()
foreign=0
if [ "$arch" != "$(dpkg --print-architecture)" ]; then
  foreign=1
  mkdir -p "$cache/apt/lists/partial" "$cache/apt/cache/archives/partial"
  touch "$cache/apt/status"
  apt_opts=(-o "APT::Architecture=$arch" -o "APT::Architectures::=$arch" -o "Dir::State::Lists=$cache/apt/lists"
    -o "Dir::Cache=$cache/apt/cache" -o "Dir::State::status=$cache/apt/status")
  if [ -z "$(find "$cache/apt/lists" -maxdepth 1 -name '*Packages*' -mtime -1 -print -quit)" ]; then
    echo "fetch-kernel: apt-get update for $arch (private lists in $cache/apt)" >&2
    apt-get "${apt_opts[@]}" update -qq >&2
  fi
fi

series_re="${series//./\\.}"
pkg="$(apt-cache "${apt_opts[@]}" search --names-only "^linux-image-${series_re}\.[0-9]+\+deb[0-9]+-${arch}-unsigned\$" 2>/dev/null \
  | awk '{print $1}' | sort -V | tail -n 1 || true)"
if [ -z "$pkg" ]; then
  # fall back to the distribution metapackage's dependency (e.g. linux-image-6.1.0-56-amd64)
  pkg="$(apt-cache "${apt_opts[@]}" depends "linux-image-${arch}" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}' || true)"
fi
if [ -z "$pkg" ]; then
  if [ -f "$cache/kernel.env" ]; then
    echo "fetch-kernel: apt-cache resolved nothing; using the cached kernel" >&2
    echo "$cache"; exit 0
  fi
  echo "fetch-kernel: no linux-image-${series}.*-${arch}-unsigned package known to apt (run apt-get update;" >&2
  [ "$arch" != amd64 ] && echo "  for $arch first: dpkg --add-architecture $arch && apt-get update)" >&2
  exit 1
fi
bb_pkg=busybox-static
sysroot_pkgs="libc6 libstdc++6 libgcc-s1"

if [ -f "$cache/kernel.env" ] && grep -qx "KERNEL_PACKAGE=$pkg" "$cache/kernel.env" \
   && grep -qx "MODULES=$want_modules" "$cache/kernel.env" \
   && [ -f "$cache/vmlinuz" ] && [ -f "$cache/busybox" ] && [ -f "$cache/modules/order" ] \
   && { [ "$foreign" = 0 ] || [ -d "$cache/sysroot" ]; }; then
  echo "fetch-kernel: $pkg already cached in $cache" >&2
  echo "$cache"; exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/mk-fetch-kernel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
extra=""
[ "$foreign" = 1 ] && extra="$sysroot_pkgs"
echo "fetch-kernel: downloading $pkg $bb_pkg $extra" >&2
# shellcheck disable=SC2086
(cd "$work" && apt-get "${apt_opts[@]}" download -q "$pkg" "$bb_pkg" $extra >&2)

mkdir -p "$work/k" "$work/bb"
dpkg-deb -x "$work"/linux-image-*.deb "$work/k"
dpkg-deb -x "$work"/busybox-static*.deb "$work/bb"

release="$(ls "$work/k/lib/modules" | head -n 1)"
[ -n "$release" ] || { echo "fetch-kernel: no lib/modules in $pkg" >&2; exit 1; }
moddir="$work/k/lib/modules/$release"

rm -rf "$cache/modules.new"
mkdir -p "$cache/modules.new"
# The package ships no modules.dep (depmod runs at install time), so read each module's own
# `depends=` field (modinfo section) and load dependencies first.
declare -A seen=()
order=()
decompress() {
  case "$1" in
    *.ko.xz) xz -dc "$1" ;;
    *.ko.zst) zstd -qdc "$1" ;;
    *.ko.gz) gzip -dc "$1" ;;
    *) cat "$1" ;;
  esac
}
resolve() {
  local name="$1" path deps d
  [ -n "${seen[$name]:-}" ] && return 0
  seen[$name]=1
  path="$(find "$moddir/kernel" \( -name "$name.ko" -o -name "$name.ko.*" \) -print -quit)"
  if [ -z "$path" ]; then
    # built in (listed in modules.builtin) or absent: nothing to load
    grep -qE "/${name}\.ko\$" "$moddir/modules.builtin" 2>/dev/null || echo "fetch-kernel: module $name not found" >&2
    return 0
  fi
  decompress "$path" > "$cache/modules.new/$name.ko"
  deps="$(tr '\0' '\n' < "$cache/modules.new/$name.ko" | sed -n 's/^depends=//p' | head -n 1 | tr ',' ' ')"
  for d in $deps; do resolve "$d"; done
  order+=("$name")
}
for m in $want_modules; do resolve "$m"; done
printf '%s\n' "${order[@]}" > "$cache/modules.new/order"

rm -rf "$cache/modules"
mv "$cache/modules.new" "$cache/modules"
if [ "$foreign" = 1 ]; then
  rm -rf "$cache/sysroot"
  mkdir -p "$cache/sysroot"
  for p in $sysroot_pkgs; do dpkg-deb -x "$work/$p"_*.deb "$cache/sysroot"; done
fi
cp "$work/k/boot/vmlinuz-$release" "$cache/vmlinuz"
cp "$work/k/boot/config-$release" "$cache/config"
cp "$work/bb/bin/busybox" "$cache/busybox"
chmod 0755 "$cache/busybox"
bb_ver="$(dpkg-deb -f "$work"/busybox-static*.deb Version)"
printf 'KERNEL_PACKAGE=%s\nKERNEL_RELEASE=%s\nBUSYBOX_PACKAGE=%s=%s\nARCH=%s\nMODULES=%s\n' \
  "$pkg" "$release" "$bb_pkg" "$bb_ver" "$arch" "$want_modules" > "$cache/kernel.env"
echo "fetch-kernel: $pkg ($release) -> $cache; modules: ${order[*]}" >&2
echo "$cache"
