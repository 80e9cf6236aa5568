//! The route table: the only paths the sidecar serves, and their metric labels.

use http::Method;

/// A route of SPEC's table (the ledger's type). Its name is the only route
/// label that reaches metrics and the ledger, so scanner traffic cannot create series.
pub use crate::ledger::Route;

impl Route {
    pub const ALL: [Route; 4] = [
        Route::Responses,
        Route::ResponsesCompact,
        Route::Models,
        Route::ChatCompletions,
    ];

    /// The path appended to the upstream's base URL.
    pub fn upstream_suffix(self) -> &'static str {
        match self {
            Route::Responses => "/responses",
            Route::ResponsesCompact => "/responses/compact",
            Route::Models => "/models",
            Route::ChatCompletions => "/chat/completions",
        }
    }

    fn method(self) -> Method {
        match self {
            Route::Models => Method::GET,
            _ => Method::POST,
        }
    }
}

/// What the table says about a request line.
#[derive(Debug, PartialEq, Eq)]
pub enum Match {
    Found(Route),
    /// The path is known, the method is not the one it takes.
    WrongMethod(Route),
    NotFound,
}

/// Exact match on the path (no normalisation: `/v1/../v1/models` is not found).
pub fn lookup(method: &Method, path: &str) -> Match {
    let route = match path {
        "/v1/responses" => Route::Responses,
        "/v1/responses/compact" => Route::ResponsesCompact,
        "/v1/models" => Route::Models,
        "/v1/chat/completions" => Route::ChatCompletions,
        _ => return Match::NotFound,
    };
    if *method == route.method() || (route == Route::Models && *method == Method::HEAD) {
        Match::Found(route)
    } else {
        Match::WrongMethod(route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(
            lookup(&Method::POST, "/v1/responses"),
            Match::Found(Route::Responses)
        );
        assert_eq!(
            lookup(&Method::POST, "/v1/responses/compact"),
            Match::Found(Route::ResponsesCompact)
        );
        assert_eq!(
            lookup(&Method::GET, "/v1/models"),
            Match::Found(Route::Models)
        );
        assert_eq!(
            lookup(&Method::POST, "/v1/chat/completions"),
            Match::Found(Route::ChatCompletions)
        );
        assert_eq!(
            lookup(&Method::GET, "/v1/responses"),
            Match::WrongMethod(Route::Responses)
        );
        assert_eq!(
            lookup(&Method::POST, "/v1/models"),
            Match::WrongMethod(Route::Models)
        );
        for p in [
            "/",
            "/v1",
            "/v1/responses/",
            "/v1/../v1/models",
            "//v1/responses",
            "/v1/Responses",
            "/v2/responses",
        ] {
            assert_eq!(lookup(&Method::POST, p), Match::NotFound, "{p}");
        }
    }
}
