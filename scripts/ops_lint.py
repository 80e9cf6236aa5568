#!/usr/bin/env python3
"""Checks of the operations assets that need no external tool (used by check-ops.sh).

  ops_lint.py dashboard-rules DASHBOARD.json   print a Prometheus rule file with every
                                               dashboard query, for `promtool check rules`
  ops_lint.py dashboard DASHBOARD.json         panel ids, layout, datasource, variables
  ops_lint.py metric-names FILE...             every codex_sidecar_* name is one SPEC defines
  ops_lint.py vector VECTOR.toml               component graph and the billing route
  ops_lint.py fluent-bit FLUENT-BIT.conf       sections, parser and Lua references, routing
  ops_lint.py vector-vrl VECTOR.toml VRL_BIN   runs the config's VRL (parse, filter) on sample
                                               ledger lines with the `vrl` CLI (cargo install vrl)

Each prints what is wrong, one problem a line, and exits 1 if anything is.
"""
import fnmatch
import json
import os
import re
import sys

# SPEC.md, "Metrics": the metric families the sidecar exports (prefix codex_sidecar_).
SPEC_METRICS = {
    "requests_total": "counter",
    "request_duration_seconds": "histogram",
    "upstream_first_byte_seconds": "histogram",
    "overhead_seconds": "histogram",
    "inflight_requests": "gauge",
    "tokens_total": "counter",
    "limit_events_total": "counter",
    "limit_state": "gauge",
    "limit_used_percent": "gauge",
    "limit_resets_at_seconds": "gauge",
    "held_requests": "gauge",
    "sessions": "gauge",
    "credential_state": "gauge",
    "credential_refresh_total": "counter",
    "upstream_errors_total": "counter",
    "ledger_records_total": "counter",
    "ledger_write_errors_total": "counter",
    "build_info": "gauge",
}

problems = []


def problem(msg):
    problems.append(msg)


def finish():
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)


# ---------------------------------------------------------------- dashboard

# Grafana variables replaced by values Prometheus accepts, so the queries can be
# checked as rule expressions.
GRAFANA_VARS = [
    ("$__rate_interval", "5m"),
    ("$__interval", "1m"),
    ("$__range", "6h"),
    ("$instance", ".*"),
    ("$job", "codex-sidecar"),
]


def dashboard_panels(dash):
    for panel in dash.get("panels", []):
        yield panel
        for inner in panel.get("panels", []):
            yield inner


def dashboard_exprs(path):
    with open(path) as f:
        dash = json.load(f)
    for panel in dashboard_panels(dash):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield panel.get("title", "?"), target.get("refId", "?"), target["expr"]


def cmd_dashboard_rules(path):
    rules = []
    for i, (title, ref, expr) in enumerate(dashboard_exprs(path)):
        for var, value in GRAFANA_VARS:
            expr = expr.replace(var, value)
        if "$" in expr:
            problem(f"{path}: panel '{title}' query {ref}: unknown variable in {expr!r}")
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    # JSON is YAML: promtool reads it as a rule file.
    print(json.dumps({"groups": [{"name": "dashboard-queries", "rules": rules}]}, indent=1))
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        sys.exit(1)


def cmd_dashboard(path):
    with open(path) as f:
        dash = json.load(f)
    names = {v.get("name") for v in dash.get("templating", {}).get("list", [])}
    for required in ("datasource", "job", "instance"):
        if required not in names:
            problem(f"{path}: template variable ${required} is missing")
    ds_vars = [v for v in dash.get("templating", {}).get("list", []) if v.get("type") == "datasource"]
    if not ds_vars or ds_vars[0].get("query") != "prometheus":
        problem(f"{path}: the datasource variable must select Prometheus data sources")
    seen = set()
    for panel in dashboard_panels(dash):
        pid = panel.get("id")
        title = panel.get("title", "?")
        if pid in seen:
            problem(f"{path}: panel id {pid} is used twice (last: '{title}')")
        seen.add(pid)
        pos = panel.get("gridPos", {})
        if pos.get("x", 0) + pos.get("w", 0) > 24:
            problem(f"{path}: panel '{title}' is wider than the 24-column grid")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problem(f"{path}: panel '{title}' does not use the $datasource variable")
        if not panel.get("targets"):
            problem(f"{path}: panel '{title}' has no query")
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            for metric in re.findall(r"\bcodex_sidecar_\w+", expr):
                if not re.search(r'\{[^}]*instance=~"\$instance"', expr):
                    problem(f"{path}: panel '{title}' query {target.get('refId')} ignores $instance")
                    break
    finish()


# ---------------------------------------------------------------- metric names

def family(name):
    base = name[len("codex_sidecar_"):]
    if base in SPEC_METRICS:
        return base
    for suffix in ("_bucket", "_count", "_sum"):
        if base.endswith(suffix) and SPEC_METRICS.get(base[: -len(suffix)]) == "histogram":
            return base[: -len(suffix)]
    return None


def cmd_metric_names(paths):
    for path in paths:
        with open(path) as f:
            text = f.read()
        for name in sorted(set(re.findall(r"\bcodex_sidecar_[a-z0-9_]+", text))):
            if family(name) is None:
                problem(f"{path}: {name} is not a metric SPEC.md defines")
    finish()


# ---------------------------------------------------------------- vector

def load_toml(path):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            problem("Python 3.11+ (tomllib) or the tomli package is needed: pip install tomli")
            finish()
    with open(path, "rb") as f:
        return tomllib.load(f)


def cmd_vector(path):
    conf = load_toml(path)
    sources = conf.get("sources", {})
    transforms = conf.get("transforms", {})
    sinks = conf.get("sinks", {})
    outputs = set(sources) | set(transforms)
    outputs |= {f"{name}.dropped" for name, t in transforms.items() if t.get("reroute_dropped")}
    consumed = set()
    for kind, table in (("transform", transforms), ("sink", sinks)):
        for name, comp in table.items():
            if "type" not in comp:
                problem(f"{path}: {kind} {name} has no type")
            inputs = comp.get("inputs", [])
            if not inputs:
                problem(f"{path}: {kind} {name} has no inputs")
            for inp in inputs:
                if inp not in outputs:
                    problem(f"{path}: {kind} {name} reads from {inp}, which no source or transform produces")
                consumed.add(inp)
    for name in outputs - consumed:
        problem(f"{path}: the output of {name} goes nowhere")

    # The billing route: metering must see only ocu_billable == true records, the
    # audit copy every line of the ledger and of its rotated files.
    files = [s for s in sources.values() if s.get("type") == "file"]
    includes = [p for s in files for p in s.get("include", [])]
    if not any(p.endswith("/ledger.jsonl") for p in includes) or not any(p.endswith("/ledger.jsonl.*") for p in includes):
        problem(f"{path}: the file source must include ledger.jsonl and its rotated files ledger.jsonl.*")
    http = {n: s for n, s in sinks.items() if s.get("type") == "http"}
    if len(http) != 1:
        problem(f"{path}: expected one http sink (OCU metering), found {len(http)}")
    for name, sink in http.items():
        for inp in sink.get("inputs", []):
            t = transforms.get(inp, {})
            if t.get("type") != "filter" or t.get("condition", "").replace(" ", "") != ".ocu_billable==true":
                problem(f"{path}: sink {name} must read only from a filter with condition '.ocu_billable == true'")
    audit = [n for n, s in sinks.items() if s.get("type") == "aws_s3"]
    if len(audit) != 1:
        problem(f"{path}: expected one aws_s3 sink (audit copy), found {len(audit)}")
    for name in audit:
        if any(i not in sources for i in sinks[name].get("inputs", [])):
            problem(f"{path}: audit sink {name} must read the file source directly (every line, unparsed)")
    finish()


# ---------------------------------------------------------------- fluent bit

def parse_fluent_bit(path):
    """Classic-mode sections: a list of (SECTION, {key_lower: value})."""
    sections = []
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            m = re.fullmatch(r"\[([A-Z]+)\]", stripped)
            if m:
                sections.append((m.group(1), {}, n))
                continue
            if stripped.startswith("@"):
                continue
            if not sections:
                problem(f"{path}:{n}: entry outside any section")
                continue
            if not line.startswith((" ", "\t")):
                problem(f"{path}:{n}: entries must be indented under their section")
            parts = stripped.split(None, 1)
            if len(parts) != 2:
                problem(f"{path}:{n}: '{stripped}' has no value")
                continue
            key, value = parts[0].lower(), parts[1]
            if key in sections[-1][1] and key not in ("add", "rule", "header", "set", "remove"):
                problem(f"{path}:{n}: {parts[0]} is set twice in this section")
            sections[-1][1].setdefault(key, value)
    return sections


def cmd_fluent_bit(path):
    base = os.path.dirname(os.path.abspath(path))
    sections = parse_fluent_bit(path)
    known = {"SERVICE", "INPUT", "FILTER", "OUTPUT", "PARSER", "MULTILINE_PARSER"}
    for name, _, n in sections:
        if name not in known:
            problem(f"{path}:{n}: unknown section [{name}]")
    service = [s for s in sections if s[0] == "SERVICE"]
    parsers = set()
    for _, kv, n in service:
        pf = kv.get("parsers_file")
        if pf:
            pf_path = pf if os.path.isabs(pf) else os.path.join(base, pf)
            if not os.path.exists(pf_path):
                problem(f"{path}:{n}: Parsers_File {pf} does not exist")
            else:
                for sec, pkv, pn in parse_fluent_bit(pf_path):
                    if sec == "PARSER":
                        if "name" not in pkv or "format" not in pkv:
                            problem(f"{pf_path}:{pn}: a parser needs Name and Format")
                        parsers.add(pkv.get("name"))
    inputs = [s for s in sections if s[0] == "INPUT"]
    filters = [s for s in sections if s[0] == "FILTER"]
    outputs = [s for s in sections if s[0] == "OUTPUT"]
    tags = []
    for _, kv, n in inputs + filters + outputs:
        if "name" not in kv:
            problem(f"{path}:{n}: section has no Name")
    for _, kv, n in inputs:
        if "tag" not in kv:
            problem(f"{path}:{n}: input has no Tag")
        tags.append(kv.get("tag", ""))
        if kv.get("parser") and kv["parser"] not in parsers:
            problem(f"{path}:{n}: parser {kv['parser']} is not defined in the Parsers_File")
        if kv.get("name") == "tail":
            if "db" not in kv:
                problem(f"{path}:{n}: a tail input without DB re-reads the ledger after every restart")
            if any(p.strip().endswith(".*") for p in kv.get("path", "").split(",")):
                problem(f"{path}:{n}: do not tail rotated files: Fluent Bit re-reads them from the start")
    for _, kv, n in filters:
        if kv.get("name") == "lua":
            script = kv.get("script", "")
            script_path = script if os.path.isabs(script) else os.path.join(base, script)
            if not os.path.exists(script_path):
                problem(f"{path}:{n}: Lua script {script} does not exist")
            else:
                with open(script_path) as f:
                    if not re.search(r"^function\s+%s\s*\(" % re.escape(kv.get("call", "")), f.read(), re.M):
                        problem(f"{path}:{n}: {script} defines no function {kv.get('call')}")
    for tag in tags:
        if not any(fnmatch.fnmatchcase(tag, kv.get("match", "")) for _, kv, _ in outputs):
            problem(f"{path}: records tagged {tag} reach no output")
    for _, kv, n in outputs:
        if not any(fnmatch.fnmatchcase(tag, kv.get("match", "")) for tag in tags):
            problem(f"{path}:{n}: output {kv.get('alias', kv.get('name'))} matches no input tag")
        if kv.get("name") == "http":
            guarded = any(fkv.get("name") == "lua" and fkv.get("call") == "keep_ocu_billable"
                          and fnmatch.fnmatchcase(kv.get("match", ""), fkv.get("match", ""))
                          for _, fkv, _ in filters)
            if not guarded:
                problem(f"{path}:{n}: the metering output must only receive records kept by keep_ocu_billable")
    finish()


# ---------------------------------------------------------------- vector VRL

SAMPLE_LINES = [
    # (ledger line, expected: "record" | "aborted" | "error", metered)
    ('{"v":1,"id":"01J0000000000000000000000A","ts":"2026-11-30T10:00:01Z",'
     '"started":"2026-11-30T10:00:00Z","session":"s-1","billing":"org","ocu_billable":true,'
     '"route":"responses","model":"gpt-5.4","status":200,"outcome":"completed",'
     '"usage":{"input":1234,"cached_input":1000,"output":56,"reasoning":7,"total":1290},'
     '"upstream_request_id":"req_1","duration_ms":812,"first_byte_ms":95,"limit":null}', "record", True),
    ('{"v":1,"id":"01J0000000000000000000000B","billing":"chatgpt_plan","ocu_billable":false,'
     '"usage":null,"outcome":"limited","limit":{"kind":"usage_limit","resets_at":1764000000}}', "record", False),
    ('{"v":1,"id":"01J0000000000000000000000C","billing":"org","ocu_billable":"true"}', "record", False),
    ('{"v":2,"id":"01J0000000000000000000000D","billing":"org","ocu_billable":true}', "aborted", False),
    ('{"v":1,"id":"01J0000000000000000000000E","billing":"org","ocu_bil', "error", False),
    ('[1,2]', "error", False),
]


def run_vrl(vrl_bin, program, events, tmpdir):
    """One `vrl` run per event (results and aborts go to different streams)."""
    import subprocess
    prog = os.path.join(tmpdir, "program.vrl")
    inp = os.path.join(tmpdir, "event.json")
    with open(prog, "w") as f:
        f.write(program)
    results = []
    for event in events:
        with open(inp, "w") as f:
            f.write(json.dumps(event) + "\n")
        out = subprocess.run([vrl_bin, "--program", prog, "--input", inp],
                             capture_output=True, text=True)
        results.append((out.stdout + out.stderr).strip())
    return results


def cmd_vector_vrl(path, vrl_bin):
    import tempfile
    conf = load_toml(path)
    transforms = conf.get("transforms", {})
    remaps = [t for t in transforms.values() if t.get("type") == "remap"]
    filters = [t for t in transforms.values() if t.get("type") == "filter"]
    if len(remaps) != 1 or len(filters) != 1:
        problem(f"{path}: expected one remap and one filter transform")
        finish()
    env_id = "env-check-ops"
    program = re.sub(r"\$\{OCU_ENVIRONMENT_ID(:\?[^}]*)?\}", env_id, remaps[0]["source"])
    if "${" in program:
        problem(f"{path}: the remap program uses an environment variable this check does not know")
        finish()
    with tempfile.TemporaryDirectory() as tmp:
        events = [{"message": line, "file": "/var/lib/codex-sidecar/ledger.jsonl",
                   "host": "h", "source_type": "file"} for line, _, _ in SAMPLE_LINES]
        results = run_vrl(vrl_bin, program + "\n.\n", events, tmp)
        if len(results) != len(SAMPLE_LINES):
            problem(f"vrl returned {len(results)} results for {len(SAMPLE_LINES)} events: {results}")
            finish()
        parsed = []
        for (line, want, metered), got in zip(SAMPLE_LINES, results):
            if want == "record":
                expected = json.loads(line)
                expected["environment_id"] = env_id
                try:
                    record = json.loads(got)
                except ValueError:
                    problem(f"remap: {line[:60]}... gave {got!r}, not the record")
                    continue
                if record != expected:
                    problem(f"remap: {line[:60]}... gave {record}, expected {expected}")
                parsed.append((record, metered))
            elif want == "aborted" and got.strip() != "aborted":
                problem(f"remap: {line[:60]} must abort (unknown schema version), gave {got!r}")
            elif want == "error" and not got.startswith("function call error"):
                problem(f"remap: {line[:60]} must fail to parse, gave {got!r}")
        condition = filters[0]["condition"]
        decisions = run_vrl(vrl_bin, condition + "\n", [r for r, _ in parsed], tmp)
        for (record, metered), got in zip(parsed, decisions):
            if got.strip() != ("true" if metered else "false"):
                problem(f"filter {condition!r} on {record.get('id')}: {got!r}, expected {metered}")
    finish()


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        sys.exit(2)
    cmd, args = argv[1], argv[2:]
    if cmd == "dashboard-rules":
        cmd_dashboard_rules(args[0])
    elif cmd == "dashboard":
        cmd_dashboard(args[0])
    elif cmd == "metric-names":
        cmd_metric_names(args)
    elif cmd == "vector":
        cmd_vector(args[0])
    elif cmd == "fluent-bit":
        cmd_fluent_bit(args[0])
    elif cmd == "vector-vrl":
        cmd_vector_vrl(args[0], args[1])
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv)
