#!/usr/bin/env bash
# Checks every prebuilds/<platform>-<arch>/*.node: the ELF machine matches the folder's arch,
# and no symbol needs a glibc newer than 2.28 (Debian 10 / RHEL 8), so the prebuilds load on
# old distributions and in QEMU guests. readelf is used rather than objdump -T because the
# host's objdump may not know foreign architectures; both read the same version-needs table.
set -euo pipefail
cd "$(dirname "$0")/.."

GLIBC_MAX=2.28
status=0
found=0

for file in prebuilds/*/*.node; do
  [ -e "$file" ] || continue
  found=$((found + 1))
  dir=$(basename "$(dirname "$file")")
  machine=$(readelf -h "$file" | sed -n 's/^ *Machine: *//p')
  case "$dir" in
    linux-x64) want='Advanced Micro Devices X86-64' ;;
    linux-arm64) want='AArch64' ;;
    *) want='' ;;
  esac
  if [ -z "$want" ]; then
    echo "FAIL $file: unknown platform folder $dir"
    status=1
    continue
  fi
  ok=1
  if [ "$machine" != "$want" ]; then
    echo "FAIL $file: machine '$machine', expected '$want'"
    ok=0
  fi
  newest=$(readelf -V --wide "$file" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
  if [ -z "$newest" ]; then
    echo "FAIL $file: no GLIBC_ symbol versions found (not a glibc build?)"
    ok=0
  elif [ "$(printf '%s\n%s\n' "$newest" "$GLIBC_MAX" | sort -V | tail -n 1)" != "$GLIBC_MAX" ]; then
    echo "FAIL $file: needs GLIBC_$newest, newer than $GLIBC_MAX:"
    readelf -V --wide "$file" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -uV | sed 's/^/  /'
    ok=0
  fi
  if [ "$ok" = 1 ]; then
    echo "ok   $file: $machine, newest glibc $newest, $(stat -c %s "$file") bytes"
  else
    status=1
  fi
done

if [ "$found" = 0 ]; then
  echo "FAIL no prebuilds/*/*.node (run npm run prebuildify and npm run prebuildify:arm64)"
  exit 1
fi
exit $status
