//! Reading each source into its state: the ChatGPT auth file and the org key
//! (file or environment variable), with header values marked sensitive.

use std::sync::Arc;

use http::HeaderValue;

use super::auth_file::{self, AuthFile, ChatgptTokens};
use super::files::{read_secret_file, FileProblem};
use super::{ChatgptCred, ChatgptStatus, EnvFn, OrgCred, OrgStatus, Sources};
use crate::secret::Secret;

pub(super) fn sensitive(value: String) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::try_from(value)
        .map_err(|_| "contains characters not allowed in an HTTP header".to_owned())?;
    v.set_sensitive(true);
    Ok(v)
}

pub(super) fn chatgpt_cred(tokens: ChatgptTokens) -> Result<ChatgptCred, String> {
    let authorization = sensitive(format!("Bearer {}", tokens.access_token.expose()))
        .map_err(|e| format!("the access token {e}"))?;
    let account_header = sensitive(tokens.account_id.expose().to_owned())
        .map_err(|e| format!("the account id {e}"))?;
    Ok(ChatgptCred {
        account_hash: tokens.account_hash(),
        tokens,
        authorization,
        account_header,
    })
}

pub(super) fn load_chatgpt(src: &Sources) -> ChatgptStatus {
    if !src.chatgpt_enabled {
        return ChatgptStatus::Disabled;
    }
    let Some(path) = &src.chatgpt_auth_file else {
        return ChatgptStatus::Disconnected;
    };
    let text = match read_secret_file("chatgpt.auth_file", path) {
        Ok(t) => t,
        Err(FileProblem::Missing) => return ChatgptStatus::Disconnected,
        Err(p) => return ChatgptStatus::Invalid(p.message().to_owned()),
    };
    let parsed = auth_file::parse(text.expose())
        .map_err(|e| format!("chatgpt.auth_file {}: {e}", path.display()));
    match parsed {
        Ok(AuthFile::Chatgpt(tokens)) => match chatgpt_cred(tokens) {
            Ok(c) => ChatgptStatus::Connected(Arc::new(c)),
            Err(e) => ChatgptStatus::Invalid(format!("chatgpt.auth_file {}: {e}", path.display())),
        },
        Ok(AuthFile::ApiKey(_)) => ChatgptStatus::Invalid(format!(
            "chatgpt.auth_file {}: holds an API key, not ChatGPT tokens; put API keys in org.api_key_file",
            path.display()
        )),
        Err(e) => ChatgptStatus::Invalid(e),
    }
}

pub(super) fn load_org(src: &Sources, env: &EnvFn) -> OrgStatus {
    let (key, source) = if let Some(path) = &src.org_key_file {
        let text = match read_secret_file("org.api_key_file", path) {
            Ok(t) => t,
            Err(FileProblem::Missing) => return OrgStatus::Missing,
            Err(p) => return OrgStatus::Invalid(p.message().to_owned()),
        };
        let key = if text.expose().starts_with('{') {
            match auth_file::parse(text.expose()) {
                Ok(AuthFile::ApiKey(k)) => k,
                Ok(AuthFile::Chatgpt(_)) => {
                    return OrgStatus::Invalid(format!(
                        "org.api_key_file {}: holds ChatGPT tokens, not an API key; point chatgpt.auth_file at it instead",
                        path.display()
                    ))
                }
                Err(e) => return OrgStatus::Invalid(format!("org.api_key_file {}: {e}", path.display())),
            }
        } else {
            text
        };
        (key, format!("file {}", path.display()))
    } else if !src.org_key_env.is_empty() {
        match env(&src.org_key_env)
            .map(Secret::new)
            .filter(|k| !k.is_empty())
        {
            Some(k) => (k, format!("environment variable {}", src.org_key_env)),
            None => return OrgStatus::Missing,
        }
    } else {
        return OrgStatus::Missing;
    };
    if key.expose().is_empty() {
        return OrgStatus::Invalid(format!(
            "org key from {source}: is empty; put the organization's API key in it (or unset org.api_key_file to use ${})",
            src.org_key_env
        ));
    }
    if key.expose().chars().any(char::is_whitespace) {
        return OrgStatus::Invalid(format!(
            "org key from {source}: contains whitespace; the file must hold only the key"
        ));
    }
    let authorization = match sensitive(format!("Bearer {}", key.expose())) {
        Ok(v) => v,
        Err(e) => return OrgStatus::Invalid(format!("org key from {source}: {e}")),
    };
    let header = |v: &Option<String>| {
        v.as_ref()
            .and_then(|s| HeaderValue::try_from(s.as_str()).ok())
    };
    OrgStatus::Ready(Arc::new(OrgCred {
        source,
        authorization,
        organization: header(&src.organization),
        project: header(&src.project),
        _key: key,
    }))
}
