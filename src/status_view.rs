//! `/status` rendered for a person at a terminal.

use serde_json::Value;

/// "2h 14m", "45s", "3d 2h": the two largest units.
pub fn human_span(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m, sec) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// "16:05 UTC" when `unix` falls on today's (UTC) date, else "2026-12-05 16:05 UTC".
fn hhmm_utc(unix: i64, now: i64) -> String {
    let s = unix.rem_euclid(86_400);
    let clock = format!("{:02}:{:02} UTC", s / 3600, (s % 3600) / 60);
    if unix.div_euclid(86_400) == now.div_euclid(86_400) {
        return clock;
    }
    match crate::time::rfc3339_from_unix(unix) {
        Some(t) => format!("{} {clock}", &t[..10]),
        None => clock,
    }
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("-")
}

pub fn render(v: &Value, now: i64) -> String {
    let mut out = String::new();
    let uptime = v.get("uptime_seconds").and_then(Value::as_i64).unwrap_or(0);
    out.push_str(&format!(
        "codex-sidecar {}  up {}{}\n",
        str_of(v, "version"),
        human_span(uptime),
        if v.get("draining").and_then(Value::as_bool) == Some(true) {
            "  DRAINING"
        } else {
            ""
        }
    ));
    out.push_str("\nCredentials\n");
    for c in v
        .get("credentials")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut line = format!("  {:<13} {}", str_of(c, "source"), str_of(c, "state"));
        if let Some(p) = c.get("plan_type").and_then(Value::as_str) {
            line.push_str(&format!("  plan {p}"));
        }
        if let Some(e) = c.get("token_expires_at").and_then(Value::as_str) {
            line.push_str(&format!("  token expires {e}"));
        }
        if let Some(d) = c.get("detail").and_then(Value::as_str) {
            line.push_str(&format!("  ({d})"));
        }
        if let Some(r) = c.get("refresh_problem").and_then(Value::as_str) {
            line.push_str(&format!("  [{r}]"));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("\nLimits\n");
    let limits = v
        .get("limits")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if limits.is_empty() {
        out.push_str("  no limit signals seen yet\n");
    }
    for l in &limits {
        let state = str_of(l, "state");
        let mut line = format!("  {:<13} {}", str_of(l, "billing"), state.to_uppercase());
        if let Some(r) = l.get("reason").and_then(Value::as_str) {
            line.push_str(&format!(" ({r})"));
        }
        if let Some(until) = l.get("until_unix").and_then(Value::as_i64) {
            line.push_str(&format!(
                "  resets in {} (at {})",
                human_span(until - now),
                hhmm_utc(until, now)
            ));
        }
        out.push_str(&line);
        out.push('\n');
        for w in l
            .get("windows")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let pct = w.get("used_percent").and_then(Value::as_f64).unwrap_or(0.0);
            let bar_len = ((pct.clamp(0.0, 100.0) / 5.0).round()) as usize;
            let mut wl = format!(
                "    {:<9} [{}{}] {:>5.1}%",
                str_of(w, "name"),
                "#".repeat(bar_len),
                ".".repeat(20 - bar_len),
                pct
            );
            if let Some(m) = w.get("window_minutes").and_then(Value::as_i64) {
                wl.push_str(&format!("  of {}", human_span(m * 60)));
            }
            if let Some(r) = w.get("resets_at").and_then(Value::as_i64) {
                wl.push_str(&format!(
                    "  resets in {} (at {})",
                    human_span(r - now),
                    hhmm_utc(r, now)
                ));
            }
            out.push_str(&wl);
            out.push('\n');
        }
    }
    out.push_str("\nSessions\n");
    let sessions = v
        .get("sessions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if sessions.is_empty() {
        out.push_str("  none yet\n");
    }
    for s in sessions.iter().take(20) {
        out.push_str(&format!(
            "  {:<38} {:<13} {:<16} {:>5} requests  last {}\n",
            str_of(s, "id"),
            str_of(s, "billing"),
            str_of(s, "state"),
            s.get("requests").and_then(Value::as_u64).unwrap_or(0),
            str_of(s, "last_seen")
        ));
    }
    if sessions.len() > 20 {
        out.push_str(&format!(
            "  … and {} more (--json for all)\n",
            sessions.len() - 20
        ));
    }
    if let Some(l) = v.get("ledger").filter(|l| !l.is_null()) {
        out.push_str(&format!(
            "\nLedger  {}  {} records written, {} write errors\n",
            str_of(l, "path"),
            l.get("records").and_then(Value::as_u64).unwrap_or(0),
            l.get("errors").and_then(Value::as_u64).unwrap_or(0)
        ));
    } else {
        out.push_str("\nLedger  NOT OPEN (see the sidecar's log)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(human_span(8040), "2h 14m");
        assert_eq!(human_span(45), "45s");
        assert_eq!(human_span(-5), "0s");
        assert_eq!(human_span(90_000), "1d 1h");
    }

    #[test]
    fn a_reset_on_another_day_carries_its_date() {
        let now = 1_764_000_000; // 2025-11-24T16:00:00Z
        assert_eq!(hhmm_utc(now + 300, now), "16:05 UTC");
        assert_eq!(hhmm_utc(now + 90_000, now), "2025-11-25 17:00 UTC");
    }

    #[test]
    fn renders_an_exhausted_plan_at_a_glance() {
        let v = serde_json::json!({"version": "0.1.0", "uptime_seconds": 65,
            "credentials": [{"source": "chatgpt_plan", "state": "connected", "plan_type": "plus"}],
            "limits": [{"billing": "chatgpt_plan", "state": "exhausted", "reason": "usage_limit_reached", "until_unix": 1_000_000 + 8040,
                "windows": [{"name": "primary", "used_percent": 100.0, "window_minutes": 300, "resets_at": 1_000_000 + 8040}]}],
            "sessions": [], "ledger": {"path": "/x", "records": 3, "errors": 0}});
        let out = render(&v, 1_000_000);
        assert!(
            out.contains("chatgpt_plan  EXHAUSTED (usage_limit_reached)  resets in 2h 14m"),
            "{out}"
        );
        assert!(
            out.contains("[####################] 100.0%  of 5h 0m"),
            "{out}"
        );
    }

    #[test]
    fn renders_token_expiry_and_a_failing_refresh() {
        let v = serde_json::json!({"credentials": [{"source": "chatgpt_plan", "state": "connected",
            "plan_type": "pro", "token_expires_at": "2026-12-04T03:13:35Z",
            "refresh_problem": "token refresh failed 2 time(s), retrying in 2s: HTTP 503"}]});
        let out = render(&v, 0);
        assert!(
            out.contains("chatgpt_plan  connected  plan pro  token expires 2026-12-04T03:13:35Z  [token refresh failed 2 time(s), retrying in 2s: HTTP 503]"),
            "{out}"
        );
    }
}
