#!/usr/bin/env bash
# The native tests under AddressSanitizer+UBSan or under valgrind (issue 13); docs/reliability.md,
# "Sanitizers", says what runs and what was found.
#
#   bash scripts/sanitize.sh asan [--long]       (npm run test:asan [-- --long])
#   bash scripts/sanitize.sh valgrind [--long]   (npm run test:valgrind [-- --long])
#
# SANITIZE_LONG=1 is the same as --long; SANITIZE_ROUNDS=n sets the long form's teardown rounds
# (default 50 under ASan, 6 under valgrind). Exits non-zero on any sanitizer or valgrind report and on
# any failed fixture or test; prints a summary either way. Logs: .cache/sanitize/<mode>/logs.
#
# asan: the addon and the test helper addon are built with -fsanitize=address,undefined into a
# staging package root, .cache/sanitize/asan (its own build/Release/multikernel.node, copies of
# lib/ and test/native, node_modules a symlink), so the worktree's build/Release is never touched:
# lib/binding.ts loads the addon with node-gyp-build from the package root it sits in, which there
# is the staging root. node itself is not instrumented: libasan and libubsan are preloaded into it
# (and into every process the tests start). LeakSanitizer is on; scripts/sanitize/lsan.supp
# suppresses only named leaks of node, OpenSSL and the non-node programs the tests start, so a
# leak whose stack has the addon in it fails the run.
#
# valgrind: node --jitless (no JIT code for memcheck to follow: faster and no self-modifying-code
# noise) under memcheck, with the worktree's own build/Release addon; --leak-check=no (node does
# not free its heap at exit; the ASan lane checks leaks).
#
# The halt case (reboot(2) under the test helper's seccomp fake) runs under capsh
# --drop=cap_sys_boot when root, as test/native/teardown.test.ts runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export npm_config_nodedir=${npm_config_nodedir:-/usr}

mode=${1:-}
shift || true
long=${SANITIZE_LONG:-0}
for arg in "$@"; do
  case $arg in
    --long) long=1 ;;
    *) echo "usage: scripts/sanitize.sh asan|valgrind [--long]" >&2; exit 2 ;;
  esac
done
case $mode in asan | valgrind) ;; *) echo "usage: scripts/sanitize.sh asan|valgrind [--long]" >&2; exit 2 ;; esac

CASES=(flowing device-read write-backpressure vsock-connect vsock-accept lock-wait halt busy)
JOBS=2 # both cores of the 2-core CI machine
STAGE=$ROOT/.cache/sanitize/$mode
LOGS=$STAGE/logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
started=$SECONDS
failures=()

capsh=$(command -v capsh || true)
[[ -z $capsh && -x /usr/sbin/capsh ]] && capsh=/usr/sbin/capsh
if [[ $(id -u) == 0 && -z $capsh ]]; then
  echo "capsh is not installed: the halt case must run without CAP_SYS_BOOT" >&2
  exit 1
fi

# --- the runners --------------------------------------------------------------------------------

# run_teardown <case> <rounds> <command...>: runs test/native/fixtures/teardown.cjs for one case with
# <command...> in front of it (the sanitizer's wrapper), in $RUN_DIR; the halt case without
# CAP_SYS_BOOT. Leaves <case>.out/.err/.rc/.seconds in $LOGS.
run_teardown() {
  local name=$1 rounds=$2
  shift 2
  local t0=$SECONDS rc=0
  local fixture=test/native/fixtures/teardown.cjs
  cd "$RUN_DIR"
  if [[ $name == halt && $(id -u) == 0 ]]; then
    "$capsh" --drop=cap_sys_boot -- -c 'exec "$0" "$@"' "$@" "$fixture" "$name" "$rounds" >"$LOGS/$name.out" 2>"$LOGS/$name.err" || rc=$?
  else
    "$@" "$fixture" "$name" "$rounds" >"$LOGS/$name.out" 2>"$LOGS/$name.err" || rc=$?
  fi
  echo "$rc" >"$LOGS/$name.rc"
  echo $((SECONDS - t0)) >"$LOGS/$name.seconds"
}

# teardown_all <rounds> <command...>: every case, $JOBS at a time; one summary line per case.
teardown_all() {
  local rounds=$1
  shift
  local name
  for name in "${CASES[@]}"; do
    while (($(jobs -rp | wc -l) >= JOBS)); do wait -n || true; done
    run_teardown "$name" "$rounds" "$@" &
  done
  wait
  for name in "${CASES[@]}"; do
    local rc report
    rc=$(cat "$LOGS/$name.rc")
    report=$(tail -n 1 "$LOGS/$name.out" 2>/dev/null || true)
    if [[ $rc == 0 ]] && grep -q '"failures":\[\]' <<<"$report"; then
      printf '  teardown %-19s %3s rounds  ok    %4ss\n' "$name" "$rounds" "$(cat "$LOGS/$name.seconds")"
    else
      printf '  teardown %-19s %3s rounds  FAIL  exit %s  (see %s/%s.err)\n' "$name" "$rounds" "$rc" "$LOGS" "$name"
      { sed 's/^/    /' "$LOGS/$name.err" | tail -n 20; } 2>/dev/null || true
      [[ -n $report ]] && echo "    report: $report"
      failures+=("teardown $name")
    fi
  done
}

# run_exercise <rounds> <helper.node> <command...>: test/native/fixtures/exercise.cjs in $RUN_DIR;
# leaves exercise.status (ok or FAIL) in $LOGS (it may run in the background: see exercise_done).
run_exercise() {
  local rounds=$1 helperNode=$2
  shift 2
  local t0=$SECONDS rc=0 report
  (cd "$RUN_DIR" && "$@" --expose-gc test/native/fixtures/exercise.cjs "$helperNode" "$rounds" >"$LOGS/exercise.out" 2>"$LOGS/exercise.err") || rc=$?
  report=$(tail -n 1 "$LOGS/exercise.out" 2>/dev/null || true)
  if [[ $rc == 0 ]] && grep -q '"failures":\[\]' <<<"$report"; then
    printf '  exercise %-19s %3s rounds  ok    %4ss\n' "(API calls)" "$rounds" "$((SECONDS - t0))"
    echo ok >"$LOGS/exercise.status"
  else
    echo FAIL >"$LOGS/exercise.status"
    printf '  exercise %-19s %3s rounds  FAIL  exit %s\n' "(API calls)" "$rounds" "$rc"
    { sed 's/^/    /' "$LOGS/exercise.err" | tail -n 20; } 2>/dev/null || true
    [[ -n $report ]] && echo "    report: $report"
  fi
}
exercise_done() { [[ $(cat "$LOGS/exercise.status" 2>/dev/null) == ok ]] || failures+=("exercise"); }

# --- asan ---------------------------------------------------------------------------------------

asan() {
  # -O1 (after node-gyp's -O3 on the command line, so it wins): what ASan recommends, and half the
  # compile time of the instrumented node-addon-api templates
  local flags='-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1'
  local libasan libubsan
  libasan=$(gcc -print-file-name=libasan.so)
  libubsan=$(gcc -print-file-name=libubsan.so)
  [[ -e $libasan && -e $libubsan ]] || { echo "gcc's libasan/libubsan are not installed" >&2; exit 1; }

  # The staging package root: the addon's sources, lib/ and test/native copied afresh (mtimes kept:
  # test/native/helper.ts rebuilds its addon only when the sources are newer), node_modules shared.
  mkdir -p "$STAGE"
  rm -rf "$STAGE/lib" "$STAGE/native" "$STAGE/docs"
  # test/ afresh too, but for the instrumented helper build (rebuilt with the addon, by the stamp)
  if [[ -d $STAGE/test ]]; then
    find "$STAGE/test" -mindepth 1 -path "$STAGE/test/native/helper/build" -prune -o -type f -print0 | xargs -0 rm -f
  fi
  cp -p package.json tsconfig.json binding.gyp "$STAGE/"
  mkdir -p "$STAGE/docs"
  cp -p docs/kernel-interface.md "$STAGE/docs/" # test/native/errno.test.ts reads it
  cp -rp lib native "$STAGE/"
  mkdir -p "$STAGE/test/native/helper"
  cp -rp test/native/*.ts test/native/fixtures "$STAGE/test/native/"
  cp -p test/native/helper/helper.c test/native/helper/binding.gyp "$STAGE/test/native/helper/"
  ln -sfn "$(readlink -f node_modules)" "$STAGE/node_modules"

  # Rebuilt only when the sources, the flags or node changed (CI starts clean: always built there).
  local stamp
  stamp=$( (cat binding.gyp native/*.cc native/*.h test/native/helper/helper.c test/native/helper/binding.gyp; echo "$flags"; node --version) | sha256sum | cut -c1-16)
  if [[ ! -f $STAGE/build/Release/multikernel.node || ! -f $STAGE/test/native/helper/build/Release/mk_test_helper.node || $(cat "$STAGE/stamp" 2>/dev/null) != "$stamp" ]]; then
    local t0=$SECONDS
    echo "building the addon and the test helper with $flags"
    (cd "$STAGE" && CFLAGS="$flags" CXXFLAGS="$flags" LDFLAGS='-fsanitize=address,undefined' \
      node node_modules/node-gyp/bin/node-gyp.js rebuild -j "$JOBS" >"$LOGS/build.log" 2>&1) || { tail -n 40 "$LOGS/build.log"; exit 1; }
    (cd "$STAGE/test/native/helper" && CFLAGS="$flags" LDFLAGS='-fsanitize=address,undefined' \
      node ../../../node_modules/node-gyp/bin/node-gyp.js rebuild >>"$LOGS/build.log" 2>&1) || { tail -n 40 "$LOGS/build.log"; exit 1; }
    echo "$stamp" >"$STAGE/stamp"
    echo "  built in $((SECONDS - t0)) s"
  fi
  touch "$STAGE/test/native/helper/build/Release/mk_test_helper.node" # newer than the copied sources
  [[ $(ldd "$STAGE/build/Release/multikernel.node") == *libasan* ]] || { echo "the staged addon is not an ASan build" >&2; exit 1; }

  # halt_on_error: the first report ends the process (UBSan's -fno-sanitize-recover does the same);
  # log_path: each report lands in a file of its own, which is what is counted below (a report in
  # a grandchild whose exit status a test ignores is still found).
  local env=(
    "LD_PRELOAD=$libasan $libubsan"
    "ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:log_path=$LOGS/asan:strict_string_checks=1:check_initialization_order=1"
    "LSAN_OPTIONS=suppressions=$ROOT/scripts/sanitize/lsan.supp:print_suppressions=0"
    "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$LOGS/ubsan"
    # 8 x the fixture's terminate() limits: a lock-wait terminate() took 4.05 s (limit 4 s at 4 x)
    # on the 2-core machine at load 11; what the lane looks for is reports, and 8 s still
    # catches a terminate() that hangs
    "TEARDOWN_LIMIT_SCALE=8"
  )

  local rounds exerciseRounds tests
  if [[ $long == 1 ]]; then
    rounds=${SANITIZE_ROUNDS:-50} exerciseRounds=20
    # every native test file but teardown.test.ts (its 8 cases x 50 rounds are run above)
    tests=(abuse binding blocking errno fd-stream flock notify vsock-native workers)
  else
    # the tap files cost a minute of CPU even for the fastest: the long form runs them
    rounds=2 exerciseRounds=2
    tests=()
  fi
  echo "ASan+UBSan: teardown fixture, ${#CASES[@]} cases x $rounds rounds; exercise fixture x $exerciseRounds"
  RUN_DIR=$STAGE teardown_all "$rounds" env "${env[@]}" node
  RUN_DIR=$STAGE run_exercise "$exerciseRounds" "$STAGE/test/native/helper/build/Release/mk_test_helper.node" env "${env[@]}" node
  exercise_done

  local summary='no tap files'
  if ((${#tests[@]} > 0)); then
    local files=() t
    for t in "${tests[@]}"; do files+=("test/native/$t.test.ts"); done
    echo "ASan+UBSan: tap ${tests[*]}"
    local t0=$SECONDS rc=0
    (cd "$STAGE" && env "${env[@]}" node node_modules/.bin/tap --disable-coverage --jobs="$JOBS" --timeout=900 --reporter=tap "${files[@]}" >"$LOGS/tap.log" 2>&1) || rc=$?
    summary=$(grep -E '^# \{ total: [0-9]+' "$LOGS/tap.log" | tail -n 1 || true)
    echo "  tap: ${summary:-no summary} in $((SECONDS - t0)) s"
    if [[ $rc != 0 ]]; then
      grep -n -E '^ *not ok' "$LOGS/tap.log" | head -n 20 | sed 's/^/    /'
      tail -n 30 "$LOGS/tap.log" | sed 's/^/    /'
      failures+=("tap (exit $rc)")
    fi
  fi

  local reports
  reports=$(find "$LOGS" -name 'asan.*' -o -name 'ubsan.*' | wc -l)
  for f in $(find "$LOGS" -name 'asan.*' -o -name 'ubsan.*'); do
    echo "--- $f"
    head -n 40 "$f"
  done
  echo
  echo "test:asan$([[ $long == 1 ]] && echo ' --long'): teardown ${#CASES[@]} cases x $rounds rounds, exercise x $exerciseRounds, tap ${#tests[@]} files (${summary:-?}); ASan/UBSan/LSan reports: $reports; failures: ${#failures[@]}; $((SECONDS - started)) s"
  ((reports == 0 && ${#failures[@]} == 0))
}

# --- valgrind -----------------------------------------------------------------------------------

valgrind_mode() {
  command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
  [[ -f build/Release/multikernel.node ]] || { echo "build/Release/multikernel.node is missing: npm run build:native" >&2; exit 1; }

  local helperNode=$ROOT/test/native/helper/build/Release/mk_test_helper.node
  if [[ ! -f $helperNode ]]; then
    echo "building the test helper addon"
    (cd test/native/helper && node ../../../node_modules/node-gyp/bin/node-gyp.js rebuild >"$LOGS/build.log" 2>&1) || { tail -n 40 "$LOGS/build.log"; exit 1; }
  fi
  local vg=(valgrind --tool=memcheck --error-exitcode=99 --track-fds=no --leak-check=no
    "--suppressions=$ROOT/scripts/sanitize/valgrind.supp" "--log-file=$LOGS/vg.%p")
  # halt: valgrind (3.19) does not implement seccomp(2), so the test helper's fake of reboot(2)
  # cannot be installed and the fixture refuses to run (the ASan lane runs it).
  local rounds exerciseRounds
  if [[ $long == 1 ]]; then
    rounds=${SANITIZE_ROUNDS:-6} exerciseRounds=5
    CASES=(flowing device-read write-backpressure vsock-connect vsock-accept lock-wait busy)
  else
    # node under valgrind starts in ~10 s of CPU and every worker costs seconds more: the short
    # form is the exercise fixture alone (its workers included); the ASan lane runs the teardown
    # cases, the long form runs them here too
    rounds=0 exerciseRounds=1
    CASES=()
  fi
  echo "valgrind (memcheck, node --jitless): teardown fixture, ${#CASES[@]} cases x $rounds rounds; exercise fixture x $exerciseRounds"
  # --expose-gc in the exercise: dropped handles are collected (their finalizers run) under memcheck
  # terminate() under valgrind takes several times its native time: 10 x the fixture's limits
  RUN_DIR=$ROOT run_exercise "$exerciseRounds" "$helperNode" "${vg[@]}" node --jitless &
  local exercisePid=$!
  if ((${#CASES[@]} > 0)); then RUN_DIR=$ROOT TEARDOWN_LIMIT_SCALE=10 JOBS=1 teardown_all "$rounds" "${vg[@]}" node --jitless; fi
  wait "$exercisePid" 2>/dev/null || true
  exercise_done

  local errors=0 f n
  for f in "$LOGS"/vg.*; do
    n=$(sed -nE 's/.*ERROR SUMMARY: ([0-9]+) errors.*/\1/p' "$f" | tail -n 1)
    if [[ ${n:-0} != 0 ]]; then
      errors=$((errors + n))
      echo "--- $f"
      head -n 80 "$f"
    fi
  done
  echo
  echo "test:valgrind$([[ $long == 1 ]] && echo ' --long'): teardown ${#CASES[@]} cases (${CASES[*]}) x $rounds rounds, exercise x $exerciseRounds; valgrind errors: $errors; failures: ${#failures[@]}; $((SECONDS - started)) s"
  ((errors == 0 && ${#failures[@]} == 0))
}

case $mode in
  asan) asan ;;
  valgrind) valgrind_mode ;;
esac
