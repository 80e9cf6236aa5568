//! Configuration: TOML file, `CODEX_SIDECAR_<SECTION>_<KEY>` environment
//! variables and command-line flags, merged (flag > env > file > default) and
//! validated into the typed [`Config`] the rest of the program uses.
//!
//! Every problem is collected with the key that causes it and what to do, so
//! `codex-sidecar check` can print them all at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Every key SPEC.md defines, with the type its environment variable parses to.
const KEYS: &[(&str, &str, Kind)] = &[
    ("server", "listen", Kind::Str),
    ("server", "admin_listen", Kind::Str),
    ("server", "allow_remote", Kind::Bool),
    ("server", "client_token_file", Kind::Str),
    ("server", "max_request_body", Kind::Size),
    ("server", "shutdown_grace", Kind::Str),
    ("server", "max_connections", Kind::Int),
    ("chatgpt", "enabled", Kind::Bool),
    ("chatgpt", "auth_file", Kind::Str),
    ("chatgpt", "base_url", Kind::Str),
    ("chatgpt", "auth_url", Kind::Str),
    ("chatgpt", "client_id", Kind::Str),
    ("org", "api_key_file", Kind::Str),
    ("org", "api_key_env", Kind::Str),
    ("org", "base_url", Kind::Str),
    ("org", "organization", Kind::Str),
    ("org", "project", Kind::Str),
    ("upstream", "connect_timeout", Kind::Str),
    ("upstream", "first_byte_timeout", Kind::Str),
    ("upstream", "idle_timeout", Kind::Str),
    ("upstream", "ca_file", Kind::Str),
    ("limits", "max_hold", Kind::Str),
    ("limits", "on_usage_limit", Kind::Str),
    ("limits", "exhausted_probe", Kind::Str),
    ("limits", "requests_per_minute", Kind::Int),
    ("limits", "burst", Kind::Int),
    ("ledger", "path", Kind::Str),
    ("ledger", "fsync", Kind::Str),
    ("ledger", "rotate_bytes", Kind::Size),
    ("ledger", "keep", Kind::Int),
    ("ledger", "required", Kind::Bool),
    ("events", "url", Kind::Str),
    ("log", "format", Kind::Str),
    ("log", "level", Kind::Str),
];

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    Int,
    Size,
}

/// The embedded defaults, as a TOML document (also what `config/codex-sidecar.toml` documents).
pub const DEFAULTS: &str = r#"
[server]
listen = "127.0.0.1:7800"
admin_listen = "127.0.0.1:7801"
allow_remote = false
client_token_file = ""
max_request_body = "32MiB"
shutdown_grace = "30s"
max_connections = 256

[chatgpt]
enabled = true
auth_file = ""
base_url = "https://chatgpt.com/backend-api/codex"
auth_url = "https://auth.openai.com"
client_id = "app_EMoamEEZ73f0CkXaXp7hrann"

[org]
api_key_file = ""
api_key_env = "OPENAI_API_KEY"
base_url = "https://api.openai.com/v1"
organization = ""
project = ""

[upstream]
connect_timeout = "10s"
first_byte_timeout = "300s"
idle_timeout = "300s"
ca_file = ""

[limits]
max_hold = "30s"
on_usage_limit = "fail"
exhausted_probe = "30m"
requests_per_minute = 0
burst = 20

[ledger]
path = ""
fsync = "1s"
rotate_bytes = "64MiB"
keep = 20
required = false

[events]
url = ""

[log]
format = "auto"
level = "info"
"#;

/// The merged document, before validation: every key present, as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    pub chatgpt: RawChatgpt,
    pub org: RawOrg,
    pub upstream: RawUpstream,
    pub limits: RawLimits,
    pub ledger: RawLedger,
    pub events: RawEvents,
    pub log: RawLog,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: String,
    pub admin_listen: String,
    pub allow_remote: bool,
    pub client_token_file: String,
    pub max_request_body: SizeValue,
    pub shutdown_grace: String,
    pub max_connections: i64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawChatgpt {
    pub enabled: bool,
    pub auth_file: String,
    pub base_url: String,
    pub auth_url: String,
    pub client_id: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrg {
    pub api_key_file: String,
    pub api_key_env: String,
    pub base_url: String,
    pub organization: String,
    pub project: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub connect_timeout: String,
    pub first_byte_timeout: String,
    pub idle_timeout: String,
    pub ca_file: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_hold: String,
    pub on_usage_limit: String,
    pub exhausted_probe: String,
    pub requests_per_minute: i64,
    pub burst: i64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    pub path: String,
    pub fsync: String,
    pub rotate_bytes: SizeValue,
    pub keep: i64,
    pub required: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvents {
    pub url: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: String,
    pub level: String,
}

/// A size written as bytes (`1048576`) or with a unit (`"32MiB"`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(i64),
    Text(String),
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub chatgpt: ChatgptConfig,
    pub org: OrgConfig,
    pub upstream: UpstreamConfig,
    pub limits: LimitsConfig,
    pub ledger: LedgerConfig,
    pub events: EventsConfig,
    pub log: LogConfig,
    /// The merged document, for `check` (contains no secrets: only paths and names).
    pub raw: RawConfig,
    /// Where the file layer came from, if any.
    pub source: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub allow_remote: bool,
    pub client_token_file: Option<PathBuf>,
    pub max_request_body: u64,
    pub shutdown_grace: Duration,
    /// Agent connections served at once; beyond it a connection gets `503`.
    pub max_connections: usize,
}

#[derive(Clone, Debug)]
pub struct ChatgptConfig {
    pub enabled: bool,
    pub auth_file: Option<PathBuf>,
    pub base_url: BaseUrl,
    pub auth_url: BaseUrl,
    pub client_id: String,
}

#[derive(Clone, Debug)]
pub struct OrgConfig {
    pub api_key_file: Option<PathBuf>,
    pub api_key_env: String,
    pub base_url: BaseUrl,
    pub organization: Option<String>,
    pub project: Option<String>,
}

#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnUsageLimit {
    Fail,
    FallbackToOrg,
}

#[derive(Clone, Debug)]
pub struct LimitsConfig {
    pub max_hold: Duration,
    pub on_usage_limit: OnUsageLimit,
    pub exhausted_probe: Duration,
    pub requests_per_minute: u32,
    pub burst: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    Always,
    Every(Duration),
}

#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// Empty in the file means the default state directory; resolved here.
    pub path: PathBuf,
    pub fsync: Fsync,
    pub rotate_bytes: u64,
    pub keep: usize,
    pub required: bool,
}

#[derive(Clone, Debug)]
pub struct EventsConfig {
    pub url: Option<http::Uri>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
    Auto,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// An upstream base URL split into the parts requests are built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrl {
    /// `https` or `http`.
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// The path prefix without a trailing slash (`/backend-api/codex`).
    pub prefix: String,
}

impl BaseUrl {
    pub fn parse(s: &str) -> Result<BaseUrl, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("not a URL ({e})"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or("must start with https:// or http://")?;
        if scheme != http::uri::Scheme::HTTPS && scheme != http::uri::Scheme::HTTP {
            return Err("must start with https:// or http://".into());
        }
        let authority = uri.authority().cloned().ok_or("has no host")?;
        if authority.as_str().contains('@') {
            return Err(
                "must not contain user:password@ (credentials come from their own files)".into(),
            );
        }
        if uri.query().is_some() {
            return Err("must not have a query string".into());
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(BaseUrl {
            scheme,
            authority,
            prefix,
        })
    }

    /// `{base}{suffix}` plus the client's query string, as a URI.
    pub fn join(&self, suffix: &str, query: Option<&str>) -> Result<http::Uri, http::Error> {
        let mut path =
            String::with_capacity(self.prefix.len() + suffix.len() + 1 + query.map_or(0, str::len));
        path.push_str(&self.prefix);
        path.push_str(suffix);
        if let Some(q) = query {
            path.push('?');
            path.push_str(q);
        }
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
    }

    pub fn is_loopback(&self) -> bool {
        let host = self
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

/// Overrides from command-line flags (the highest precedence).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
}

/// Loads `file` (if any), overlays the environment and the flags, and validates.
/// The error lists every problem, one a line, each naming the key and the fix.
pub fn load(
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    flags: &Overrides,
) -> Result<Config, Vec<String>> {
    let text = match file {
        None => None,
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            vec![format!(
                "config file {}: cannot read it: {e}",
                path.display()
            )]
        })?),
    };
    let mut cfg = load_text(
        text.as_deref().zip(file.map(|p| p.display().to_string())),
        env,
        flags,
    )?;
    cfg.source = file.map(Path::to_path_buf);
    Ok(cfg)
}

/// [`load`] with the file's text already read: `(text, name for messages)`.
pub fn load_text(
    file: Option<(&str, String)>,
    env: &dyn Fn(&str) -> Option<String>,
    flags: &Overrides,
) -> Result<Config, Vec<String>> {
    let mut doc: toml::Table = DEFAULTS
        .parse()
        .map_err(|e| vec![format!("embedded defaults: {e}")])?;
    if let Some((text, name)) = file {
        let layer: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            vec![format!("config file {name}: {}", one_line(&e.to_string()))]
        })?;
        merge_file_layer(&mut doc, layer).map_err(|e| vec![format!("config file {name}: {e}")])?;
    }
    let mut problems = Vec::new();
    for (section, key, kind) in KEYS {
        let var = format!(
            "CODEX_SIDECAR_{}_{}",
            section.to_uppercase(),
            key.to_uppercase()
        );
        if let Some(value) = env(&var) {
            match env_value(&value, *kind) {
                Ok(v) => set(&mut doc, section, key, v),
                Err(e) => problems.push(format!("{var}={value:?}: {e}")),
            }
        }
    }
    if let Some(l) = &flags.listen {
        set(&mut doc, "server", "listen", toml::Value::String(l.clone()));
    }
    if let Some(l) = &flags.admin_listen {
        set(
            &mut doc,
            "server",
            "admin_listen",
            toml::Value::String(l.clone()),
        );
    }
    let raw: RawConfig = match toml::Value::Table(doc).try_into() {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(one_line(&e.to_string()));
            return Err(problems);
        }
    };
    match validate(raw, env) {
        Ok(cfg) if problems.is_empty() => Ok(cfg),
        Ok(_) => Err(problems),
        Err(mut more) => {
            problems.append(&mut more);
            Err(problems)
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Merges the file's tables into the defaults; an unknown section or key is an error naming it.
fn merge_file_layer(doc: &mut toml::Table, layer: toml::Table) -> Result<(), String> {
    for (section, value) in layer {
        if !value.is_table() {
            // `listen = "..."` at the top, or a Codex config given by mistake.
            let hint = if doc.values().any(|t| t.get(&section).is_some()) {
                let owner = doc
                    .iter()
                    .find(|(_, t)| t.get(&section).is_some())
                    .map_or("", |(name, _)| name.as_str());
                format!(": it belongs in [{owner}]")
            } else {
                " (is this a Codex config.toml? that one goes in $CODEX_HOME, not here)".to_owned()
            };
            return Err(format!("unknown top-level key `{section}`{hint}"));
        }
        let Some(toml::Value::Table(target)) = doc.get_mut(&section) else {
            let known: Vec<&str> = doc.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown section [{section}] (known sections: {})",
                known.join(", ")
            ));
        };
        let toml::Value::Table(entries) = value else {
            return Err(format!(
                "`{section}` must be a table: write it as [{section}]"
            ));
        };
        for (key, v) in entries {
            if !target.contains_key(&key) {
                let known: Vec<&str> = target.keys().map(String::as_str).collect();
                return Err(format!(
                    "unknown key `{key}` in [{section}] (known keys: {})",
                    known.join(", ")
                ));
            }
            target.insert(key, v);
        }
    }
    Ok(())
}

fn set(doc: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    if let Some(toml::Value::Table(t)) = doc.get_mut(section) {
        t.insert(key.to_owned(), value);
    }
}

fn env_value(value: &str, kind: Kind) -> Result<toml::Value, String> {
    Ok(match kind {
        Kind::Str | Kind::Size => toml::Value::String(value.to_owned()),
        Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
            _ => return Err("expected true or false".into()),
        },
        Kind::Int => toml::Value::Integer(
            value
                .trim()
                .parse()
                .map_err(|_| "expected a whole number".to_owned())?,
        ),
    })
}

/// Parses `"32MiB"`, `"64 KiB"`, `"1GB"` or `"1048576"` to bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("{s:?} is not a size: write e.g. \"32MiB\", \"512KiB\" or a number of bytes")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?}: use KiB, MiB or GiB"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn size(v: &SizeValue) -> Result<u64, String> {
    match v {
        SizeValue::Bytes(n) => u64::try_from(*n).map_err(|_| "must not be negative".to_owned()),
        SizeValue::Text(s) => parse_size(s),
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("{s:?} is not a duration ({e}): write e.g. \"250ms\", \"30s\", \"5m\"")
    })
}

fn opt_path(s: &str) -> Option<PathBuf> {
    let s = s.trim();
    (!s.is_empty()).then(|| PathBuf::from(s))
}

fn opt_str(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn validate(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();
    let mut check = |key: &str, r: Result<(), String>| {
        if let Err(e) = r {
            problems.push(format!("{key}: {e}"));
        }
    };
    macro_rules! field {
        ($key:expr, $expr:expr, $default:expr) => {
            match $expr {
                Ok(v) => v,
                Err(e) => {
                    check($key, Err(e));
                    $default
                }
            }
        };
    }
    let fallback_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let r = &raw;
    let listen = field!("server.listen", parse_addr(&r.server.listen), fallback_addr);
    let admin_listen = field!(
        "server.admin_listen",
        parse_addr(&r.server.admin_listen),
        fallback_addr
    );
    // Only the proxy listener spends credentials; the admin listener (metrics,
    // health, secret-free status) may face a scraper on another address.
    if !r.server.allow_remote && !listen.ip().is_loopback() {
        check(
            "server.listen",
            Err(format!(
                "{listen} is not a loopback address; the sidecar spends credentials for whoever reaches it and listens on this machine only. \
                 Use 127.0.0.1:<port>, or set server.allow_remote = true (with server.client_token_file) if you really mean it"
            )),
        );
    }
    if r.server.allow_remote
        && !listen.ip().is_loopback()
        && r.server.client_token_file.trim().is_empty()
    {
        check(
            "server.client_token_file",
            Err(format!(
                "must be set when server.allow_remote = true and server.listen ({listen}) is not loopback: \
                 otherwise anyone who reaches {listen} spends the user's and the organization's credentials"
            )),
        );
    }
    if listen.port() != 0 && listen == admin_listen {
        check(
            "server.admin_listen",
            Err(format!(
                "{admin_listen} is also server.listen: give the admin listener its own port (default 7801)"
            )),
        );
    }
    let max_request_body = field!(
        "server.max_request_body",
        size(&r.server.max_request_body).and_then(|n| if n == 0 {
            Err("must be more than 0 (e.g. \"32MiB\"): 0 would refuse every request body".into())
        } else {
            Ok(n)
        }),
        0
    );
    let shutdown_grace = field!(
        "server.shutdown_grace",
        duration(&r.server.shutdown_grace),
        Duration::ZERO
    );
    let max_connections = field!(
        "server.max_connections",
        usize::try_from(r.server.max_connections)
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| "must be a whole number between 1 and 1000000".to_owned()),
        1
    );
    let placeholder = || BaseUrl {
        scheme: http::uri::Scheme::HTTPS,
        authority: http::uri::Authority::from_static("invalid"),
        prefix: String::new(),
    };
    let chatgpt_base = field!(
        "chatgpt.base_url",
        BaseUrl::parse(&r.chatgpt.base_url),
        placeholder()
    );
    let auth_url = field!(
        "chatgpt.auth_url",
        BaseUrl::parse(&r.chatgpt.auth_url),
        placeholder()
    );
    if r.chatgpt.client_id.trim().is_empty() {
        check("chatgpt.client_id", Err("must not be empty".into()));
    }
    let org_base = field!(
        "org.base_url",
        BaseUrl::parse(&r.org.base_url),
        placeholder()
    );
    for (key, base) in [
        ("chatgpt.base_url", &chatgpt_base),
        ("chatgpt.auth_url", &auth_url),
        ("org.base_url", &org_base),
    ] {
        if base.scheme == http::uri::Scheme::HTTP && !base.is_loopback() {
            check(
                key,
                Err(format!(
                    "{base} is plain http to another host: credentials would travel unencrypted. Use https:// (plain http is allowed for loopback gateways only)"
                )),
            );
        }
    }
    if r.org.api_key_env.trim().is_empty() && r.org.api_key_file.trim().is_empty() {
        // Allowed: the org source is then simply never configured.
    }
    let connect_timeout = field!(
        "upstream.connect_timeout",
        nonzero(duration(&r.upstream.connect_timeout)),
        Duration::ZERO
    );
    let first_byte_timeout = field!(
        "upstream.first_byte_timeout",
        nonzero(duration(&r.upstream.first_byte_timeout)),
        Duration::ZERO
    );
    let idle_timeout = field!(
        "upstream.idle_timeout",
        nonzero(duration(&r.upstream.idle_timeout)),
        Duration::ZERO
    );
    let max_hold = field!(
        "limits.max_hold",
        duration(&r.limits.max_hold),
        Duration::ZERO
    );
    let on_usage_limit = field!(
        "limits.on_usage_limit",
        match r.limits.on_usage_limit.trim() {
            "fail" => Ok(OnUsageLimit::Fail),
            "fallback_to_org" => Ok(OnUsageLimit::FallbackToOrg),
            other => Err(format!(
                "{other:?} is not one of \"fail\", \"fallback_to_org\""
            )),
        },
        OnUsageLimit::Fail
    );
    let exhausted_probe = field!(
        "limits.exhausted_probe",
        nonzero(duration(&r.limits.exhausted_probe)),
        Duration::ZERO
    );
    let requests_per_minute = field!(
        "limits.requests_per_minute",
        u32::try_from(r.limits.requests_per_minute)
            .map_err(|_| "must be between 0 and 4294967295".to_owned()),
        0
    );
    let burst = field!(
        "limits.burst",
        u32::try_from(r.limits.burst)
            .ok()
            .filter(|b| *b > 0)
            .ok_or_else(|| "must be a whole number of at least 1".to_owned()),
        1
    );
    let fsync = field!(
        "ledger.fsync",
        match r.ledger.fsync.trim() {
            "always" => Ok(Fsync::Always),
            other => nonzero(duration(other))
                .map(Fsync::Every)
                .map_err(|e| format!("{e}, or \"always\"")),
        },
        Fsync::Always
    );
    let rotate_bytes = field!(
        "ledger.rotate_bytes",
        size(&r.ledger.rotate_bytes).and_then(|n| if n < 4096 {
            Err("must be at least 4KiB".into())
        } else {
            Ok(n)
        }),
        0
    );
    let keep = field!(
        "ledger.keep",
        usize::try_from(r.ledger.keep).map_err(|_| "must not be negative".to_owned()),
        0
    );
    let ledger_path = match opt_path(&r.ledger.path) {
        Some(p) => p,
        None => default_state_dir(env).join("ledger.jsonl"),
    };
    let events_url = field!(
        "events.url",
        match opt_str(&r.events.url) {
            None => Ok(None),
            Some(u) =>
                u.parse::<http::Uri>()
                    .ok()
                    .filter(|u| matches!(u.scheme_str(), Some("http" | "https"))
                        && u.authority().is_some())
                    .map(Some)
                    .ok_or_else(|| "must be an http:// or https:// URL".to_owned()),
        },
        None
    );
    let format = field!(
        "log.format",
        match r.log.format.trim() {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            "auto" => Ok(LogFormat::Auto),
            other => Err(format!(
                "{other:?} is not one of \"json\", \"text\", \"auto\""
            )),
        },
        LogFormat::Auto
    );
    let level = r.log.level.trim().to_owned();
    check("log.level", check_log_level(&level));
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Config {
        server: ServerConfig {
            listen,
            admin_listen,
            allow_remote: r.server.allow_remote,
            client_token_file: opt_path(&r.server.client_token_file),
            max_request_body,
            shutdown_grace,
            max_connections,
        },
        chatgpt: ChatgptConfig {
            enabled: r.chatgpt.enabled,
            auth_file: opt_path(&r.chatgpt.auth_file),
            base_url: chatgpt_base,
            auth_url,
            client_id: r.chatgpt.client_id.trim().to_owned(),
        },
        org: OrgConfig {
            api_key_file: opt_path(&r.org.api_key_file),
            api_key_env: r.org.api_key_env.trim().to_owned(),
            base_url: org_base,
            organization: opt_str(&r.org.organization),
            project: opt_str(&r.org.project),
        },
        upstream: UpstreamConfig {
            connect_timeout,
            first_byte_timeout,
            idle_timeout,
            ca_file: opt_path(&r.upstream.ca_file),
        },
        limits: LimitsConfig {
            max_hold,
            on_usage_limit,
            exhausted_probe,
            requests_per_minute,
            burst,
        },
        ledger: LedgerConfig {
            path: ledger_path,
            fsync,
            rotate_bytes,
            keep,
            required: r.ledger.required,
        },
        events: EventsConfig { url: events_url },
        log: LogConfig { format, level },
        raw,
        source: None,
    })
}

/// A level (`info`), or an `EnvFilter` list (`info,codex_sidecar::access=warn`).
/// A bare word that is no level would be read as a target name and silence
/// every other log line, so it is refused.
fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let hint = "use error, warn, info, debug or trace (or a filter such as \"info,codex_sidecar::access=warn\")";
    for directive in level.split(',').map(str::trim) {
        if !directive.contains('=') && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!("{directive:?} is not a log level: {hint}"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| format!("{level:?} is not a level or filter ({e}): {hint}"))
}

fn nonzero(d: Result<Duration, String>) -> Result<Duration, String> {
    d.and_then(|d| {
        if d.is_zero() {
            Err("must be longer than 0s".into())
        } else {
            Ok(d)
        }
    })
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an address: write ip:port, e.g. \"127.0.0.1:7800\""))
}

/// `$STATE_DIRECTORY` (systemd), else `$XDG_STATE_HOME/codex-sidecar`, else `./codex-sidecar-state`.
pub fn default_state_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(d) = env("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may pass several, colon-separated: the first is ours.
        return PathBuf::from(d.split(':').next().unwrap_or(&d));
    }
    if let Some(d) = env("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("codex-sidecar");
    }
    PathBuf::from("codex-sidecar-state")
}

impl Config {
    /// The effective configuration as TOML, for `check`. It holds paths and
    /// names only; a URL's user info and query are redacted in case they hold a token.
    pub fn effective_toml(&self) -> String {
        let mut raw = self.raw.clone();
        raw.events.url = redact_url(&raw.events.url);
        raw.ledger.path = self.ledger.path.display().to_string();
        toml::to_string(&raw)
            .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }
}

/// Hides `user:pass@` and the query string of a URL.
pub fn redact_url(url: &str) -> String {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return if url.is_empty() {
            String::new()
        } else {
            "[redacted]".into()
        };
    };
    let (Some(scheme), Some(auth)) = (uri.scheme_str(), uri.authority()) else {
        return if url.is_empty() {
            String::new()
        } else {
            "[redacted]".into()
        };
    };
    let host = auth.as_str().rsplit('@').next().unwrap_or("");
    let q = if uri.query().is_some() {
        "?[redacted]"
    } else {
        ""
    };
    let user = if auth.as_str().contains('@') {
        "[redacted]@"
    } else {
        ""
    };
    format!("{scheme}://{user}{host}{}{q}", uri.path())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn embedded_defaults_are_the_spec_defaults() {
        let c = load(None, &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:7800".parse().unwrap());
        assert_eq!(c.server.admin_listen, "127.0.0.1:7801".parse().unwrap());
        assert_eq!(c.server.max_request_body, 32 << 20);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.server.max_connections, 256);
        assert_eq!(
            c.chatgpt.base_url.to_string(),
            "https://chatgpt.com/backend-api/codex"
        );
        assert_eq!(c.org.base_url.to_string(), "https://api.openai.com/v1");
        assert_eq!(c.org.api_key_env, "OPENAI_API_KEY");
        assert_eq!(c.upstream.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.limits.burst, 20);
        assert_eq!(c.limits.on_usage_limit, OnUsageLimit::Fail);
        assert_eq!(c.ledger.fsync, Fsync::Every(Duration::from_secs(1)));
        assert_eq!(c.ledger.rotate_bytes, 64 << 20);
        assert_eq!(
            c.ledger.path,
            PathBuf::from("codex-sidecar-state/ledger.jsonl")
        );
    }

    #[test]
    fn precedence_is_flag_then_env_then_file_then_default() {
        let f = file("[server]\nlisten = \"127.0.0.1:1111\"\nadmin_listen = \"127.0.0.1:2222\"\nshutdown_grace = \"5s\"\n");
        let env = env_of(&[
            ("CODEX_SIDECAR_SERVER_LISTEN", "127.0.0.1:3333"),
            ("CODEX_SIDECAR_LIMITS_BURST", "7"),
        ]);
        let flags = Overrides {
            listen: Some("127.0.0.1:4444".into()),
            admin_listen: None,
        };
        let c = load(Some(f.path()), &env, &flags).unwrap();
        assert_eq!(c.server.listen.port(), 4444);
        assert_eq!(c.server.admin_listen.port(), 2222);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.limits.burst, 7);
        let c = load(Some(f.path()), &env, &Overrides::default()).unwrap();
        assert_eq!(c.server.listen.port(), 3333);
    }

    #[test]
    fn unknown_keys_and_sections_are_named() {
        let f = file("[server]\nlissten = \"x\"\n");
        let e = load(Some(f.path()), &env_of(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("unknown key `lissten` in [server]"), "{e:?}");
        let f = file("[serverr]\n");
        let e = load(Some(f.path()), &env_of(&[]), &Overrides::default()).unwrap_err();
        assert!(e[0].contains("unknown section [serverr]"), "{e:?}");
        let e = problems("listen = \"127.0.0.1:9\"\n");
        assert!(
            e.contains("unknown top-level key `listen`: it belongs in [server]"),
            "{e}"
        );
        let e = problems("model_provider = \"sidecar\"\n");
        assert!(e.contains("is this a Codex config.toml?"), "{e}");
    }

    fn problems(text: &str) -> String {
        let f = file(text);
        load(Some(f.path()), &env_of(&[]), &Overrides::default())
            .map(|_| String::new())
            .unwrap_or_else(|e| e.join("\n"))
    }

    #[test]
    fn a_word_that_is_no_log_level_is_refused() {
        // Such a word is a target name to EnvFilter and would silence every log line.
        for bad in ["warning", "loud", "info,verbose"] {
            let e = problems(&format!("[log]\nlevel = {bad:?}\n"));
            assert!(e.starts_with("log.level: "), "{bad}: {e}");
            assert!(e.contains("is not a log level"), "{bad}: {e}");
        }
        for good in ["warn", "WARN", "Info", "debug,hyper=info", "off"] {
            assert_eq!(
                problems(&format!("[log]\nlevel = {good:?}\n")),
                "",
                "{good}"
            );
        }
    }

    #[test]
    fn settings_that_could_only_break_serving_are_refused() {
        let e = problems("[server]\nmax_request_body = \"0\"\n");
        assert!(
            e.contains("server.max_request_body: must be more than 0"),
            "{e}"
        );
        let e =
            problems("[server]\nlisten = \"127.0.0.1:9000\"\nadmin_listen = \"127.0.0.1:9000\"\n");
        assert!(
            e.contains("server.admin_listen: 127.0.0.1:9000 is also server.listen"),
            "{e}"
        );
        let e = problems("[server]\nlisten = \"0.0.0.0:7800\"\nallow_remote = true\n");
        assert!(
            e.contains("server.client_token_file: must be set when server.allow_remote = true"),
            "{e}"
        );
        assert_eq!(
            problems("[server]\nlisten = \"0.0.0.0:7800\"\nallow_remote = true\nclient_token_file = \"/run/token\"\n"),
            ""
        );
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key() {
        let f = file(
            "[server]\nlisten = \"0.0.0.0:7800\"\nmax_request_body = \"12 parsecs\"\n[upstream]\nidle_timeout = \"soon\"\n[limits]\non_usage_limit = \"panic\"\nburst = 0\n[log]\nformat = \"xml\"\n",
        );
        let e = load(
            Some(f.path()),
            &env_of(&[("CODEX_SIDECAR_LEDGER_REQUIRED", "maybe")]),
            &Overrides::default(),
        )
        .unwrap_err();
        let all = e.join("\n");
        for needle in [
            "CODEX_SIDECAR_LEDGER_REQUIRED",
            "server.listen: 0.0.0.0:7800 is not a loopback address",
            "server.max_request_body",
            "upstream.idle_timeout",
            "limits.on_usage_limit",
            "limits.burst",
            "log.format",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn wrong_types_in_the_file_are_errors() {
        let f = file("[server]\nallow_remote = \"yes\"\n");
        let e = load(Some(f.path()), &env_of(&[]), &Overrides::default()).unwrap_err();
        assert!(
            e[0].contains("allow_remote") || e[0].contains("bool"),
            "{e:?}"
        );
    }

    #[test]
    fn sizes_and_base_urls() {
        assert_eq!(parse_size("32MiB").unwrap(), 32 << 20);
        assert_eq!(parse_size("4 KiB").unwrap(), 4096);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
        let b = BaseUrl::parse("https://chatgpt.com/backend-api/codex/").unwrap();
        assert_eq!(
            b.join("/responses", Some("a=1")).unwrap().to_string(),
            "https://chatgpt.com/backend-api/codex/responses?a=1"
        );
        assert!(BaseUrl::parse("ftp://x").is_err());
        assert!(BaseUrl::parse("https://u:p@x").is_err());
    }

    #[test]
    fn plain_http_only_to_loopback() {
        let f = file("[org]\nbase_url = \"http://gateway.corp:8080/v1\"\n");
        assert!(load(Some(f.path()), &env_of(&[]), &Overrides::default()).is_err());
        let f = file("[org]\nbase_url = \"http://127.0.0.1:8080/v1\"\n");
        assert!(load(Some(f.path()), &env_of(&[]), &Overrides::default()).is_ok()); // Refresh tokens travel to the auth server: the same rule.
        let f = file("[chatgpt]\nauth_url = \"http://auth.corp\"\n");
        let e = load(Some(f.path()), &env_of(&[]), &Overrides::default()).unwrap_err();
        assert!(e.iter().any(|p| p.contains("chatgpt.auth_url")), "{e:?}");
        let f = file("[chatgpt]\nauth_url = \"http://127.0.0.1:9\"\n");
        assert!(load(Some(f.path()), &env_of(&[]), &Overrides::default()).is_ok());
    }

    #[test]
    fn state_dir_resolution() {
        assert_eq!(
            default_state_dir(&env_of(&[("STATE_DIRECTORY", "/var/lib/x:/var/lib/y")])),
            PathBuf::from("/var/lib/x")
        );
        assert_eq!(
            default_state_dir(&env_of(&[("XDG_STATE_HOME", "/home/u/.local/state")])),
            PathBuf::from("/home/u/.local/state/codex-sidecar")
        );
    }

    #[test]
    fn effective_config_redacts_url_secrets() {
        let env = env_of(&[(
            "CODEX_SIDECAR_EVENTS_URL",
            "https://user:hunter2@events.example/hook?token=abc",
        )]);
        let c = load(None, &env, &Overrides::default()).unwrap();
        let out = c.effective_toml();
        assert!(!out.contains("hunter2") && !out.contains("abc"), "{out}");
        assert!(
            out.contains("https://[redacted]@events.example/hook?[redacted]"),
            "{out}"
        );
    }
}
