#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/CMakeLists.txt, clang-16) into build-fuzz/
# and runs each fuzz/*_fuzz.cpp for SECONDS (default 60) on a fresh copy of its
# seed corpus fuzz/corpus/<target>/. Exits non-zero if any target finds a
# crash, a leak or a timeout; the input that did it is left in
# build-fuzz/artifacts/<target>/ and the log in build-fuzz/logs/<target>.log.
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail

seconds=${1:-60}
shift || true
fuzz=$(cd "$(dirname "$0")" && pwd)
build=$(dirname "$fuzz")/build-fuzz

CC=${CC:-clang-16} CXX=${CXX:-clang++-16} \
  cmake -S "$fuzz" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$build" >/dev/null

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for src in "$fuzz"/*_fuzz.cpp; do targets+=("$(basename "$src" .cpp)"); done
fi

status=0
for target in "${targets[@]}"; do
  corpus=$build/corpus/$target
  rm -rf "$corpus"
  mkdir -p "$corpus" "$build/artifacts/$target" "$build/logs"
  cp -r "$fuzz/corpus/$target/." "$corpus/"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$build/artifacts/$target/")
  [ -f "$fuzz/$target.dict" ] && args+=(-dict="$fuzz/$target.dict")
  log=$build/logs/$target.log
  if "$build/$target" "${args[@]}" "$corpus" >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    status=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "$target: $result, ${execs:-?} runs in ${seconds}s (log: $log)"
  [ "$result" = ok ] || grep -m 5 -E "ERROR|SUMMARY|artifact" "$log" || true
done
exit $status
