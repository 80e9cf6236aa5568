//! `codex-sidecar login --device`: the device-code sign-in of PROTOCOL.md §3
//! against `chatgpt.auth_url`. The person opens a URL and types a code; this
//! polls until the sign-in finishes, exchanges the code for tokens and writes
//! `chatgpt.auth_file` (Codex's auth.json, mode 0600) for the sidecar to pick up.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use super::auth_file::{jwt_payload, ChatgptTokens};
use super::auth_http::{form_encode, AuthAnswer, AuthClient};
use crate::secret::Secret;

/// How long the person has to finish signing in.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(15 * 60);
/// Polls are never closer than this, whatever interval the server names.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The interval when the server names none (or an unreadable one).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// What the login needs besides the HTTP client.
pub struct DeviceLogin<'a> {
    pub http: &'a AuthClient,
    pub client_id: &'a str,
    pub auth_file: &'a Path,
    /// [`GIVE_UP_AFTER`] for the command; shorter in tests.
    pub give_up_after: Duration,
}

/// A successful login, for the closing message.
#[derive(Debug)]
pub struct LoggedIn {
    pub plan_type: Option<String>,
    pub account_hash: String,
}

impl DeviceLogin<'_> {
    /// Runs the whole flow, telling the person what to do on `out`.
    /// Errors are one message saying what happened and what to do.
    pub async fn run(&self, out: &mut dyn Write) -> Result<LoggedIn, String> {
        let again = "run codex-sidecar login --device again";
        let body = serde_json::json!({"client_id": self.client_id}).to_string();
        let start = self
            .http
            .post_json("/api/accounts/deviceauth/usercode", body.into_bytes())
            .await
            .map_err(|e| {
                format!(
                    "cannot reach the ChatGPT sign-in server {} ({}); check chatgpt.auth_url, the network and HTTPS_PROXY",
                    self.http.url(""),
                    e.0
                )
            })?;
        if start.status != 200 {
            return Err(format!(
                "the sign-in server refused to start a device login: HTTP {}{} from {}; device login may be disabled for this workspace",
                start.status,
                code_note(&start),
                self.http.url("/api/accounts/deviceauth/usercode")
            ));
        }
        let v = start.json().unwrap_or_default();
        let device_auth_id = v
            .get("device_auth_id")
            .and_then(|x| x.as_str())
            .filter(|s| !s.is_empty())
            .map(|s| Secret::new(s.to_owned()));
        let user_code = v
            .get("user_code")
            .or_else(|| v.get("usercode"))
            .and_then(|x| x.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let (Some(device_auth_id), Some(user_code)) = (device_auth_id, user_code) else {
            return Err(format!(
                "the sign-in server's answer has no device_auth_id or user_code ({}); {again}",
                self.http.url("/api/accounts/deviceauth/usercode")
            ));
        };
        let interval = parse_interval(v.get("interval"));
        let minutes = self.give_up_after.as_secs().div_ceil(60);
        let _ = writeln!(
            out,
            "To connect your ChatGPT account, open this page in a browser:\n\n    {}\n\nand enter the code:\n\n    {user_code}\n\nWaiting for you to finish signing in (up to {minutes} minutes; Ctrl-C to stop)...",
            self.http.url("/codex/device")
        );
        let _ = out.flush();

        let poll_body = serde_json::json!({
            "device_auth_id": device_auth_id.expose(),
            "user_code": user_code,
        })
        .to_string();
        let poll_body = Secret::new(poll_body);
        let began = Instant::now();
        let grant = loop {
            if began.elapsed() >= self.give_up_after {
                return Err(format!(
                    "the sign-in was not finished within {} minutes, so the code expired; {again}",
                    minutes
                ));
            }
            let answer = self
                .http
                .post_json(
                    "/api/accounts/deviceauth/token",
                    poll_body.expose().as_bytes().to_vec(),
                )
                .await;
            match answer {
                // A blip while the person is signing in: keep waiting.
                Err(e) => {
                    tracing::debug!(error = %e.0, "device login poll failed; retrying");
                }
                Ok(a) if a.status == 200 => break a,
                Ok(a) if a.status == 403 || a.status == 404 => {}
                Ok(a) => return Err(poll_failure(&a, again)),
            }
            let left = self.give_up_after.saturating_sub(began.elapsed());
            tokio::time::sleep(interval.min(left)).await;
        };
        let g = grant.json().unwrap_or_default();
        let get = |k: &str| {
            g.get(k)
                .and_then(|x| x.as_str())
                .filter(|s| !s.is_empty())
                .map(|s| Secret::new(s.to_owned()))
        };
        let (Some(code), Some(verifier)) = (get("authorization_code"), get("code_verifier")) else {
            return Err(format!(
                "the sign-in finished but the server's answer has no authorization_code or code_verifier; {again}"
            ));
        };
        let redirect = self.http.url("/deviceauth/callback");
        let form = form_encode(&[
            ("grant_type", "authorization_code"),
            ("code", code.expose()),
            ("redirect_uri", &redirect),
            ("client_id", self.client_id),
            ("code_verifier", verifier.expose()),
        ]);
        let exchanged = self
            .http
            .post_form("/oauth/token", form)
            .await
            .map_err(|e| {
                format!(
                    "the sign-in finished but the code could not be exchanged for tokens ({}); {again}",
                    e.0
                )
            })?;
        if exchanged.status != 200 {
            return Err(format!(
                "the sign-in finished but {} refused the code: HTTP {}{}; {again}",
                self.http.url("/oauth/token"),
                exchanged.status,
                code_note(&exchanged)
            ));
        }
        let tokens = tokens_of(&exchanged).ok_or_else(|| {
            format!(
                "the token answer lacks an access_token, or an id_token naming the account (chatgpt_account_id); {again}"
            )
        })?;
        let now = crate::time::rfc3339_millis(std::time::SystemTime::now());
        super::persist::write_auth_file(
            self.auth_file,
            &tokens,
            &now,
            super::persist::Others::Drop,
        )?;
        Ok(LoggedIn {
            plan_type: tokens.plan_type.clone(),
            account_hash: tokens.account_hash().as_str().to_owned(),
        })
    }
}

/// The `login --device` command: config (for `chatgpt.auth_url`,
/// `chatgpt.client_id`, the upstream client settings and the default
/// `chatgpt.auth_file`), then the flow. Returns the closing message.
pub async fn login_command(
    config_file: Option<&Path>,
    auth_file: Option<std::path::PathBuf>,
    out: &mut dyn Write,
) -> Result<String, String> {
    let env = |k: &str| std::env::var(k).ok();
    let cfg = crate::config::load(config_file, &env, &Default::default())
        .map_err(|p| format!("the configuration has problems:\n  {}", p.join("\n  ")))?;
    let Some(path) = auth_file.or_else(|| cfg.chatgpt.auth_file.clone()) else {
        return Err("no credential file to write: pass --auth-file FILE or set chatgpt.auth_file in the config".into());
    };
    if !cfg.chatgpt.enabled {
        let _ = writeln!(out, "note: chatgpt.enabled = false in this configuration: the sidecar will ignore the account until the organization enables it");
    }
    let http = AuthClient::new(&cfg)?;
    let done = DeviceLogin {
        http: &http,
        client_id: &cfg.chatgpt.client_id,
        auth_file: &path,
        give_up_after: GIVE_UP_AFTER,
    }
    .run(out)
    .await?;
    Ok(format!(
        "\nConnected: ChatGPT account {} (plan {}), credential written to {} (mode 0600).\nA running sidecar picks it up within a second: new sessions are billed to the ChatGPT plan.\n",
        done.account_hash,
        done.plan_type.as_deref().unwrap_or("unknown"),
        path.display()
    ))
}

/// " (code)" when the answer carries an error code.
fn code_note(a: &AuthAnswer) -> String {
    a.error_code()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default()
}

/// A poll answer that is neither pending nor success: denial, expiry, or other.
fn poll_failure(a: &AuthAnswer, again: &str) -> String {
    let codes = a.error_codes().join(" ").to_ascii_lowercase();
    if ["denied", "declined", "rejected", "cancel"]
        .iter()
        .any(|w| codes.contains(w))
    {
        return format!("the sign-in was denied in the browser, so no account was connected; {again} to try once more");
    }
    if a.status == 410 || codes.contains("expired") {
        return format!(
            "the code expired before the sign-in finished; {again} and enter the new code sooner"
        );
    }
    format!(
        "the sign-in server answered HTTP {}{} while waiting for the sign-in; {again}",
        a.status,
        code_note(a)
    )
}

/// The `interval` field: seconds as a string ("5") or a number.
fn parse_interval(v: Option<&serde_json::Value>) -> Duration {
    let secs = match v {
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        _ => None,
    };
    match secs {
        Some(s) if s.is_finite() && s >= 0.0 => {
            Duration::from_secs_f64(s.min(300.0)).max(MIN_INTERVAL)
        }
        _ => DEFAULT_INTERVAL,
    }
}

/// The tokens of a code-exchange answer; the account comes from the id token.
fn tokens_of(a: &AuthAnswer) -> Option<ChatgptTokens> {
    let v = a.json()?;
    let get = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .filter(|s| !s.trim().is_empty())
            .map(|s| Secret::new(s.to_owned()))
    };
    let access = get("access_token")?;
    let id = get("id_token")?;
    let claims = jwt_payload(id.expose())?;
    let auth = claims.get("https://api.openai.com/auth")?;
    let account = auth
        .get("chatgpt_account_id")
        .and_then(|x| x.as_str())
        .filter(|s| !s.is_empty())
        .map(|s| Secret::new(s.to_owned()))?;
    let plan_type = auth
        .get("chatgpt_plan_type")
        .and_then(|x| x.as_str())
        .map(str::to_owned);
    let expires_at =
        jwt_payload(access.expose()).and_then(|c| c.get("exp").and_then(|e| e.as_i64()));
    Some(ChatgptTokens {
        access_token: access,
        refresh_token: get("refresh_token"),
        id_token: Some(id),
        account_id: account,
        expires_at,
        plan_type,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    #[test]
    fn interval_is_a_string_or_a_number_with_a_floor() {
        assert_eq!(parse_interval(Some(&json!("5"))), Duration::from_secs(5));
        assert_eq!(parse_interval(Some(&json!(2))), Duration::from_secs(2));
        assert_eq!(parse_interval(Some(&json!("0"))), MIN_INTERVAL);
        assert_eq!(parse_interval(Some(&json!("soon"))), DEFAULT_INTERVAL);
        assert_eq!(parse_interval(None), DEFAULT_INTERVAL);
        assert_eq!(parse_interval(Some(&json!("-1"))), DEFAULT_INTERVAL);
    }

    #[test]
    fn denial_and_expiry_have_their_own_messages() {
        let a = |status, body: &str| AuthAnswer {
            status,
            body: Bytes::from(body.to_owned()),
        };
        let m = poll_failure(&a(400, r#"{"error":"access_denied"}"#), "again");
        assert!(m.contains("denied"), "{m}");
        let m = poll_failure(
            &a(400, r#"{"error":{"code":"deviceauth_expired"}}"#),
            "again",
        );
        assert!(m.contains("expired"), "{m}");
        let m = poll_failure(&a(410, ""), "again");
        assert!(m.contains("expired"), "{m}");
        let m = poll_failure(&a(500, "oops"), "again");
        assert!(m.contains("HTTP 500"), "{m}");
    }
}
