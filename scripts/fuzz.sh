#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (FUZZ_SECONDS, default 60) from the
# committed seed corpus (fuzz/corpus/<target>, read only; new inputs go to
# fuzz/target/corpus/<target>). Stable Rust: RUSTC_BOOTSTRAP=1 lets it take the
# -Z flags cargo-fuzz passes. A crash fails the run; its input is in fuzz/artifacts/<target>/:
# turn it into a regression unit test next to the code, then fix the code.
#   scripts/fuzz.sh                 every target
#   scripts/fuzz.sh sse_reader      one target
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${FUZZ_SECONDS:-60}"
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(sse_reader limit_signals auth_file config)

command -v cargo-fuzz >/dev/null 2>&1 || {
  echo "fuzz.sh: cargo-fuzz is missing; run scripts/install-test-tools.sh" >&2
  exit 1
}
export RUSTC_BOOTSTRAP=1
# The toolchain rustup picks for this repo (stable); nothing here needs nightly.
cd fuzz
cargo fuzz build || { echo "fuzz.sh: the fuzz targets do not build" >&2; exit 1; }
for t in "${TARGETS[@]}"; do
  mkdir -p "target/corpus/$t"
  echo "fuzz.sh: $t for ${SECONDS_EACH}s"
  cargo fuzz run "$t" "target/corpus/$t" "corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -print_final_stats=1 -close_fd_mask=3 \
    || { echo "fuzz.sh: $t found a crash (see fuzz/artifacts/$t/)" >&2; exit 1; }
done
echo "fuzz.sh: ${#TARGETS[@]} targets ran ${SECONDS_EACH}s each without a crash"
