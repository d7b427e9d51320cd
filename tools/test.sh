#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite: on a plain (optimized)
# build the unit, fuzz-corpus and packaging tests and the end-to-end tests of suite
# e2e-release (a smoke run of every client and the tests with an optimized build's timing
# bounds); on an AddressSanitizer + UndefinedBehaviorSanitizer build everything, every
# end-to-end test included; then each fuzz target under libFuzzer. Exits non-zero on any
# failure.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

echo "==> installing what is missing (tools/setup.sh)"
node_dir="$(bash tools/setup.sh)"
export KPP_NODE_CACHE="$node_dir"

passed=0
failed=0
count_results() {
  read -r ok bad < <(/usr/bin/python3 - "$1/meson-logs/testlog.json" <<'PY'
import json, sys
ok = bad = 0
for line in open(sys.argv[1]):
    result = json.loads(line).get("result")
    if result in ("OK", "EXPECTEDFAIL", "SKIP"): ok += 1
    else: bad += 1
print(ok, bad)
PY
)
  passed=$((passed + ok))
  failed=$((failed + bad))
}

run_suite() {
  local build_dir="$1" test_args="$2"
  shift 2
  echo "==> building $build_dir"
  bash tools/build.sh "$build_dir" "$@"
  echo "==> testing $build_dir"
  local status=0
  # shellcheck disable=SC2086 # test_args is a word list
  meson test -C "$build_dir" --print-errorlogs --num-processes 1 $test_args || status=$?
  count_results "$build_dir"
  [[ $status -eq 0 ]] || failed=$((failed > 0 ? failed : 1))
}

# The end-to-end tests take most of the time and run once, under the sanitizers, except
# for those of suite e2e-release (tests/e2e/meson.build).
run_suite build "--no-suite e2e-sanitized"
run_suite build-sanitize "" -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug

# libFuzzer: the fuzz targets built with clang and run for a bounded time each.
echo "==> building build-fuzz (clang, libFuzzer)"
if [[ ! -f build-fuzz/build.ninja ]]; then
  CC=clang CXX=clang++ meson setup build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined \
    -Db_lundef=false -De2e=false -Dtests=disabled -Dbenchmarks=disabled >/dev/null
fi
# Each fuzz target's executable, relative to the build folder (they sit beside their sources).
fuzz_executables=$(meson introspect build-fuzz --tests | /usr/bin/python3 -c \
  'import json,os,sys; print(" ".join(sorted({os.path.relpath(t["cmd"][0], "build-fuzz") for t in json.load(sys.stdin) if any(s.endswith("fuzz") for s in t["suite"])})))')
fuzz_targets=$(for executable in $fuzz_executables; do basename "$executable"; done | tr '\n' ' ')
# Quiet when it works; the compiler's words when it does not (set -e would end the run
# with no message).
if ! ninja -C build-fuzz $fuzz_executables > build-fuzz/fuzz-build.log 2>&1; then
  tail -n 60 build-fuzz/fuzz-build.log
  echo "the fuzz build failed (build-fuzz/fuzz-build.log)" >&2
  exit 1
fi
echo "==> fuzzing ($fuzz_targets)"
status=0
meson test -C build-fuzz --suite fuzz --no-rebuild --print-errorlogs --num-processes 1 || status=$?
count_results build-fuzz
[[ $status -eq 0 ]] || failed=$((failed > 0 ? failed : 1))

echo "tests: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
