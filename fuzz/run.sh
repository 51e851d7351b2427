#!/usr/bin/env bash
# `make fuzz`: builds the fuzz targets (fuzz/Package.swift) with libFuzzer and AddressSanitizer and runs each for
# FUZZ_SECONDS (default 60) on its seeds (fuzz/seeds/NAME) and a corpus kept in .build-fuzz/corpus/NAME.
# A crashing input is written to fuzz/regressions/NAME/ and the run fails: commit it, fix the parser, and the unit
# tests replay it from then on (Tests/*/FuzzRegressionTests.swift). FUZZ_TARGETS="tree index" runs a subset.
set -euo pipefail
cd "$(dirname "$0")"
export PATH=/opt/swift/usr/bin:$PATH
scratch=../.build-fuzz
flags=(-c debug --sanitize=fuzzer --sanitize=address --scratch-path "$scratch")
swift build "${flags[@]}"
bin=$(swift build "${flags[@]}" --show-bin-path)
secs=${FUZZ_SECONDS:-60}
declare -A exe=([tree]=FuzzTree [index]=FuzzIndex [packheader]=FuzzPackHeader [object]=FuzzObject [config]=FuzzConfig [range]=FuzzRange [wal]=FuzzWAL [sqlitewal]=FuzzSQLiteWAL)
status=0
for name in ${FUZZ_TARGETS:-tree index packheader object config range wal sqlitewal}; do
  corpus="$scratch/corpus/$name"
  mkdir -p "$corpus" "regressions/$name" "seeds/$name"
  echo "== $name: ${exe[$name]} for ${secs}s"
  # -rss_limit_mb: a parser that allocates gigabytes for a small input is a finding too.
  if ! "$bin/${exe[$name]}" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
       -artifact_prefix="regressions/$name/" "$corpus" "seeds/$name" 2>&1 | tail -n 12; then
    echo "FAILED: $name: see fuzz/regressions/$name/" >&2
    status=1
  fi
done
exit $status
