#!/usr/bin/env bash
# The whole test suite, as CI runs it: tools, lints, every test, the ops checks, fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-tools.sh
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets
scripts/check-ops.sh
scripts/fuzz.sh
