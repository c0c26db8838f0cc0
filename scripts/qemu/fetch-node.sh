#!/usr/bin/env bash
# Fetch a node binary for a guest architecture that differs from the host's, from npm's
# `node-linux-<arch>` package (the official Node.js build, repackaged), with the same version as
# the host's node. Idempotent.
#
#   scripts/qemu/fetch-node.sh [--arch arm64] [--version 20.20.2] [--cache DIR]
#
# Result: DIR/node (default DIR: .cache/qemu/<arch>); prints DIR/node as its last line. The binary
# is dynamically linked against glibc: scripts/qemu/fetch-kernel.sh --arch <arch> puts the
# libraries it needs in DIR/sysroot.
set -euo pipefail
arch=arm64
version="$(node -p process.versions.node)"
cache=
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --cache) cache="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "fetch-node: unknown argument $1" >&2; exit 2 ;;
  esac
done
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${cache:-$root/.cache/qemu/$arch}"
mkdir -p "$cache"
if [ -x "$cache/node" ] && [ "$(cat "$cache/node.version" 2>/dev/null)" = "$version" ]; then
  echo "fetch-node: node $version for $arch already in $cache" >&2
  echo "$cache/node"; exit 0
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/mk-fetch-node.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "fetch-node: npm pack node-linux-$arch@$version" >&2
(cd "$work" && npm pack --silent "node-linux-$arch@$version" >/dev/null)
tar -xzf "$work"/node-linux-"$arch"-*.tgz -C "$work"
cp "$work/package/bin/node" "$cache/node"
chmod 0755 "$cache/node"
echo "$version" > "$cache/node.version"
echo "$cache/node"
