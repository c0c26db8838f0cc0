#!/usr/bin/env bash
# Packs the package and proves two install paths work:
#  1. the tarball carries prebuilds for linux-x64 and linux-arm64, and installs into an empty
#     project with no compiler reachable (PATH holds only node, npm and sh), loading the
#     linux-x64 prebuild through the package's dist/binding.js;
#  2. the same tarball without prebuilds builds the addon from source at install time.
# Needs the prebuilds first: npm run prebuildify && npm run prebuildify:arm64.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset npm_config_build_from_source
export npm_config_nodedir="${npm_config_nodedir:-/usr}"
npm_flags=(--prefer-offline --no-audit --no-fund --loglevel=error)

step() { printf '\n== %s\n' "$*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

step "npm pack (runs prepack: tsc -p tsconfig.build.json over all of lib/)"
npm pack --pack-destination "$work" "${npm_flags[@]}" >"$work/pack.log" 2>&1 || {
  cat "$work/pack.log" >&2
  fail "npm pack failed (see the compiler output above)"
}
tarball=$(ls "$work"/multikernel-*.tgz)
echo "$(basename "$tarball"): $(stat -c %s "$tarball") bytes"
listing=$(tar -tzf "$tarball")
for prebuild in package/prebuilds/linux-x64/multikernel.glibc.node package/prebuilds/linux-arm64/multikernel.glibc.node \
  package/dist/binding.js package/binding.gyp package/native/addon.cc; do
  grep -qx "$prebuild" <<<"$listing" || fail "the tarball lacks $prebuild"
  echo "has $prebuild"
done
if grep -q '^package/build/' <<<"$listing"; then fail "the tarball carries a build/ folder"; fi

# A PATH with node, npm and sh only: no cc, c++, make or python can be found.
bin="$work/bin"
mkdir -p "$bin"
ln -s "$(command -v node)" "$bin/node"
ln -s "$(command -v npm)" "$bin/npm"
ln -s "$(command -v sh)" "$bin/sh"
for tool in cc gcc g++ c++ make python3; do
  PATH="$bin" command -v "$tool" >/dev/null 2>&1 && fail "$tool is reachable through the stripped PATH"
done

load_check='
const path = require("node:path");
const pkg = path.dirname(require.resolve("multikernel/package.json"));
const { loadBinding } = require(path.join(pkg, "dist", "binding.js"));
const binding = loadBinding();
const file = require("node-gyp-build").resolve(pkg);
const fd = binding.memfdCreate("pack-check");
require("node:fs").closeSync(fd);
if (binding.kexecFlags(1, { initrd: false, debug: false, unload: false }) !== 0x34) throw new Error("kexecFlags");
console.log(path.relative(pkg, file));
'

step "install with prebuilds, no compiler on PATH"
mkdir "$work/with-prebuilds"
(
  cd "$work/with-prebuilds"
  echo '{"name":"consumer","version":"1.0.0","private":true}' >package.json
  PATH="$bin" npm install "$tarball" "${npm_flags[@]}"
  [ ! -e node_modules/multikernel/build ] || fail "the install compiled the addon although a prebuild matches"
  loaded=$(PATH="$bin" node -e "$load_check")
  echo "loaded $loaded"
  [ "$loaded" = "prebuilds/linux-x64/multikernel.glibc.node" ] || fail "expected the linux-x64 prebuild, got $loaded"
) || fail "install with prebuilds"

step "install of a tarball without prebuilds builds from source"
mkdir "$work/repack"
tar -xzf "$tarball" -C "$work/repack"
rm -rf "$work/repack/package/prebuilds"
tar -czf "$work/no-prebuilds.tgz" -C "$work/repack" package
mkdir "$work/from-source"
(
  cd "$work/from-source"
  echo '{"name":"consumer","version":"1.0.0","private":true}' >package.json
  npm install "$work/no-prebuilds.tgz" "${npm_flags[@]}" --foreground-scripts >"$work/source-install.log" 2>&1 || {
    cat "$work/source-install.log" >&2
    fail "npm install of the tarball without prebuilds"
  }
  grep -q 'SOLINK_MODULE\|COPY Release/multikernel.node' "$work/source-install.log" || {
    cat "$work/source-install.log" >&2
    fail "no compile seen in the install log"
  }
  loaded=$(node -e "$load_check")
  echo "loaded $loaded"
  [ "$loaded" = "build/Release/multikernel.node" ] || fail "expected the source build, got $loaded"
) || fail "install from source"

step "pack-check passed"
