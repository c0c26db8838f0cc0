#!/usr/bin/env bash
# The QEMU lane in CI: installs what it needs, fetches the stock Debian kernel, builds what the
# guests load (dist/ and the addon, when the caller has not already) and runs `npm run test:qemu`.
# With MULTIKERNEL_KERNEL and MULTIKERNEL_SPAWN_KERNEL set it also runs the contract suite inside
# that kernel (test/qemu/multikernel-x86.test.ts). The arm64 guest (test/qemu/arm64.test.ts) runs
# when prebuilds/linux-arm64 exists, the busybox-only arm64 harness check (harness-arm64.test.ts)
# always; MKQEMU_ARM64=0 leaves both out (and qemu-system-arm uninstalled).
set -euo pipefail
cd "$(dirname "$0")/../.."
export DEBIAN_FRONTEND=noninteractive
start=$SECONDS

pkgs="qemu-system-x86 cpio busybox-static xz-utils zstd libcap2-bin gcc libc6-dev"
[ "${MKQEMU_ARM64:-1}" = 1 ] && pkgs="$pkgs qemu-system-arm gcc-aarch64-linux-gnu"
missing=""
for p in $pkgs; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "qemu lane: apt-get install$missing"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

bash scripts/qemu/fetch-kernel.sh --arch amd64 >/dev/null
[ -f dist/system/linux/index.js ] || npm run build:ts
[ -f build/Release/multikernel.node ] || npm run build:native

echo "qemu lane: setup took $((SECONDS - start)) s"
npm run test:qemu
echo "qemu lane: total $((SECONDS - start)) s"
