#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/CMakeLists.txt, clang-16) into build-fuzz/
# and runs each fuzz/*_fuzz.cpp for SECONDS (default 60) on a fresh copy of its
# seed corpus fuzz/corpus/<target>/, as many targets side by side as there are
# cores (FUZZ_JOBS to change it). Exits non-zero if any target finds a crash, a
# leak or a timeout; the input that did it is left in
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

jobs=${FUZZ_JOBS:-$(nproc)}
fuzz_one() {
  local target=$1 corpus=$build/corpus/$1
  rm -rf "$corpus"
  mkdir -p "$corpus" "$build/artifacts/$target" "$build/logs"
  cp -r "$fuzz/corpus/$target/." "$corpus/"
  local args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
              -artifact_prefix="$build/artifacts/$target/")
  [ -f "$fuzz/$target.dict" ] && args+=(-dict="$fuzz/$target.dict")
  "$build/$target" "${args[@]}" "$corpus" >"$build/logs/$target.log" 2>&1
}

# Each target in the background, at most $jobs at once; each one's exit
# status is collected by its pid.
declare -A pid_of
for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  fuzz_one "$target" &
  pid_of[$target]=$!
done

status=0
for target in "${targets[@]}"; do
  log=$build/logs/$target.log
  if wait "${pid_of[$target]}"; then
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
