#!/usr/bin/env bash
# Runs every fuzz target for the given number of seconds (default 60) with cargo fuzz, starting
# from the checked-in seed corpus. Needs `cargo install cargo-fuzz`; on a stable toolchain it
# sets RUSTC_BOOTSTRAP=1 for the sanitizer flags cargo fuzz uses.
# Usage: fuzz/run.sh [seconds] [target ...]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame_decode handshake bus_decode token_verify)
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "== $t for ${secs}s"
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -artifact_prefix="artifacts/$t/" -print_final_stats=1 2>&1 \
    | grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|artifact)" || true
done
