#!/usr/bin/env bash
# Cross-compiles the addon for linux-arm64 with Debian's aarch64 toolchain (no Docker needed):
# prebuilds/linux-arm64/multikernel.glibc.node. Installs g++-aarch64-linux-gnu when it is
# missing and we are root; otherwise says how to get it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu
  else
    echo "prebuild-arm64: aarch64-linux-gnu-g++ not found; install Debian's g++-aarch64-linux-gnu (as root)" >&2
    exit 1
  fi
fi

export CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ AR=aarch64-linux-gnu-ar
# Node's own headers from the distro package: node-gyp must not try to download them.
export npm_config_nodedir="${npm_config_nodedir:-/usr}"

# prebuildify builds in ./build: do it in a scratch copy, so the checkout's build/Release
# (the host build that node-gyp-build loads first) is never replaced by an arm64 binary.
repo=$PWD
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r package.json binding.gyp native "$scratch/"
ln -s "$repo/node_modules" "$scratch/node_modules"
(cd "$scratch" && "$repo/node_modules/.bin/prebuildify" --napi --strip --tag-libc --arch arm64 --strip-bin aarch64-linux-gnu-strip)
mkdir -p prebuilds/linux-arm64
cp "$scratch"/prebuilds/linux-arm64/*.node prebuilds/linux-arm64/
ls -l prebuilds/linux-arm64/
