#!/usr/bin/env bash
# The benchmarks in one run (about 8 minutes once built): the micro benchmarks (criterion:
# SSE reader, header rewrite, ledger append) and the macro harness (benches/macro: the
# sidecar next to a direct connection, nginx and `codex responses-api-proxy`), written to
# benches/RESULTS.md and benches/latency.svg.
# Installs nginx (Debian) and the pinned Codex CLI when absent. Not part of scripts/test.sh.
#   BENCH_ROUNDS=N   interleaved rounds (default 3)
#   BENCH_QUICK=1    short runs to check the harness works (figures not worth quoting)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bench: $*" >&2; exit 1; }
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@";
  elif command -v sudo >/dev/null 2>&1; then sudo "$@";
  else die "need root (or sudo) to run: $*"; fi
}

NGINX=$(command -v nginx || true)
[ -n "$NGINX" ] || [ ! -x /usr/sbin/nginx ] || NGINX=/usr/sbin/nginx
if [ -z "$NGINX" ]; then
  echo "installing nginx (Debian package nginx)..."
  as_root apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends nginx >/dev/null \
    || die "apt-get install nginx failed"
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
[ -x "$NGINX" ] || die "nginx is not at $NGINX after installing it"

CODEX=target/tools/codex/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex
[ -x "$CODEX" ] || scripts/install-test-tools.sh

MICRO=(cargo bench --locked --bench sse_reader --bench headers --bench ledger_append -- --warm-up-time 1 --measurement-time 3)
MACRO=(cargo bench --locked --bench macro -- --rounds "${BENCH_ROUNDS:-3}" --nginx "$NGINX")
[ "${BENCH_QUICK:-0}" = 1 ] && MACRO+=(--quick)

cargo build --release --locked
cargo bench --locked --no-run --bench sse_reader --bench headers --bench ledger_append --bench macro
start=$(date +%s)
"${MICRO[@]}"
"${MACRO[@]}" \
  --command "scripts/bench.sh   # does all of the following" \
  --command "cargo build --release --locked" \
  --command "${MICRO[*]}" \
  --command "${MACRO[*]}"
echo "bench: done in $(( $(date +%s) - start )) s after the build; see benches/RESULTS.md and benches/latency.svg"
