//! Codex's `auth.json` format (PROTOCOL.md §3) and the JWT claims the sidecar reads.

use base64::Engine;
use serde::Deserialize;

use crate::ledger::AccountHash;
use crate::secret::Secret;

/// What an auth.json holds, with every secret wrapped (Debug shows no secret).
#[derive(Debug)]
pub enum AuthFile {
    Chatgpt(ChatgptTokens),
    ApiKey(Secret),
}

/// The ChatGPT OAuth tokens of a connected account.
#[derive(Clone, Debug)]
pub struct ChatgptTokens {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub id_token: Option<Secret>,
    pub account_id: Secret,
    /// `exp` of the access token, unix seconds.
    pub expires_at: Option<i64>,
    pub plan_type: Option<String>,
}

impl ChatgptTokens {
    /// A stable, non-reversible name for the account (ledger, `/status`, limit keys).
    pub fn account_hash(&self) -> AccountHash {
        AccountHash::of(self.account_id.expose())
    }
}

#[derive(Deserialize)]
struct RawAuth {
    #[serde(default)]
    auth_mode: Option<String>,
    #[serde(rename = "OPENAI_API_KEY", default)]
    openai_api_key: Option<String>,
    #[serde(default)]
    tokens: Option<RawTokens>,
}

#[derive(Deserialize)]
struct RawTokens {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    account_id: Option<String>,
}

/// Parses auth.json text. Errors say what is wrong without quoting the contents.
pub fn parse(text: &str) -> Result<AuthFile, String> {
    let raw: RawAuth = serde_json::from_str(text).map_err(|e| {
        // serde_json messages can quote values: keep only the category and position.
        let what = match e.classify() {
            serde_json::error::Category::Io => "cannot be read",
            serde_json::error::Category::Syntax => "is not valid JSON",
            serde_json::error::Category::Data => "has a field of the wrong type",
            serde_json::error::Category::Eof => "ends too early (is it still being written?)",
        };
        format!("{what} (line {}, column {})", e.line(), e.column())
    })?;
    let mode = raw.auth_mode.as_deref().unwrap_or("");
    if let Some(tokens) = raw.tokens.filter(|_| mode != "apikey") {
        let access = tokens
            .access_token
            .filter(|t| !t.trim().is_empty())
            .map(Secret::new)
            .ok_or("has no tokens.access_token")?;
        let id_token = tokens
            .id_token
            .filter(|t| !t.trim().is_empty())
            .map(Secret::new);
        let id_claims = id_token.as_ref().and_then(|t| jwt_payload(t.expose()));
        let auth_claims = id_claims
            .as_ref()
            .and_then(|c| c.get("https://api.openai.com/auth"));
        let account = tokens
            .account_id
            .filter(|a| !a.trim().is_empty())
            .or_else(|| {
                auth_claims
                    .and_then(|c| c.get("chatgpt_account_id"))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .map(Secret::new)
            .ok_or("has no tokens.account_id (and the id token names no chatgpt_account_id)")?;
        let plan_type = auth_claims
            .and_then(|c| c.get("chatgpt_plan_type"))
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let expires_at =
            jwt_payload(access.expose()).and_then(|c| c.get("exp").and_then(|v| v.as_i64()));
        return Ok(AuthFile::Chatgpt(ChatgptTokens {
            access_token: access,
            refresh_token: tokens
                .refresh_token
                .filter(|t| !t.trim().is_empty())
                .map(Secret::new),
            id_token,
            account_id: account,
            expires_at,
            plan_type,
        }));
    }
    if let Some(key) = raw.openai_api_key.filter(|k| !k.trim().is_empty()) {
        return Ok(AuthFile::ApiKey(Secret::new(key)));
    }
    Err("holds neither ChatGPT tokens nor an OPENAI_API_KEY".into())
}

/// Decodes a JWT's payload without verifying it (the sidecar is not its audience).
pub fn jwt_payload(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode(b"{\"alg\":\"none\"}"),
            e.encode(claims.to_string())
        )
    }

    #[test]
    fn chatgpt_file_gives_token_account_plan_and_expiry() {
        let id = jwt(
            serde_json::json!({"https://api.openai.com/auth": {"chatgpt_plan_type": "plus", "chatgpt_account_id": "acc-1"}}),
        );
        let access = jwt(serde_json::json!({"exp": 1_900_000_000}));
        let text = serde_json::json!({"auth_mode": "chatgpt", "OPENAI_API_KEY": null,
            "tokens": {"id_token": id, "access_token": access, "refresh_token": "rt-1", "account_id": "acc-1"}})
        .to_string();
        let AuthFile::Chatgpt(t) = parse(&text).unwrap() else {
            panic!()
        };
        assert_eq!(t.access_token.expose(), access);
        assert_eq!(t.account_id.expose(), "acc-1");
        assert_eq!(t.plan_type.as_deref(), Some("plus"));
        assert_eq!(t.expires_at, Some(1_900_000_000));
        assert_eq!(t.account_hash().as_str().len(), 32);
    }

    #[test]
    fn api_key_file() {
        let AuthFile::ApiKey(k) =
            parse(r#"{"auth_mode":"apikey","OPENAI_API_KEY":"sk-abc"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(k.expose(), "sk-abc");
    }

    #[test]
    fn errors_never_quote_the_contents() {
        let e = parse(r#"{"tokens": {"access_token": "secret-token-xyz", "account_id": 5}}"#)
            .unwrap_err();
        assert!(!e.contains("secret-token-xyz") && !e.contains('5'), "{e}");
        let e = parse(r#"{"tokens": {"access_token": "secret-token-xyz""#).unwrap_err();
        assert!(e.contains("ends too early") && !e.contains("secret"), "{e}");
        assert!(parse("{}").unwrap_err().contains("neither"));
        assert!(parse(r#"{"tokens":{"access_token":""}}"#)
            .unwrap_err()
            .contains("access_token"));
    }

    #[test]
    fn jwt_payload_tolerates_garbage() {
        assert!(jwt_payload("not a jwt").is_none());
        assert!(jwt_payload("a.!!!.c").is_none());
        assert!(jwt_payload("").is_none());
    }
}
