//! The HTTP calls of upstream sources (ureq), and what their answers may tell a log.
//!
//! Contract: every call has an overall [`TIMEOUT`] and follows no redirects (a token endpoint
//! that redirects is misconfigured, and a redirect would carry a secret form elsewhere). An
//! error names the URL, the status and the OAuth `error` / `error_description` fields (RFC 6749
//! 5.2) of the answer, never the request's fields, the answer's token or a header.

use std::time::Duration;

use serde_json::Value;

/// The longest one upstream call may take, connect to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The agent all upstream calls of one source share.
pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(TIMEOUT)
        .redirects(0)
        .user_agent(concat!("imds-tun/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// POSTs an `application/x-www-form-urlencoded` body; the JSON answer.
pub fn post_form(
    agent: &ureq::Agent,
    url: &str,
    fields: &[(&str, &str)],
    bearer: Option<&str>,
) -> Result<Value, String> {
    let mut req = agent.post(url);
    if let Some(t) = bearer {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    answer(url, req.send_form(fields))
}

/// POSTs a JSON body; the JSON answer.
pub fn post_json(
    agent: &ureq::Agent,
    url: &str,
    body: &Value,
    bearer: Option<&str>,
) -> Result<Value, String> {
    let mut req = agent
        .post(url)
        .set("Content-Type", "application/json; charset=utf-8");
    if let Some(t) = bearer {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    answer(url, req.send_string(&body.to_string()))
}

/// GETs a document with `headers`; the body as text.
pub fn get_text(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(String, String)],
) -> Result<String, String> {
    let mut req = agent.get(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    match req.call() {
        Ok(r) => r
            .into_string()
            .map_err(|e| format!("{url}: reading the answer: {e}")),
        Err(ureq::Error::Status(code, _)) => Err(format!("{url}: HTTP {code}")),
        Err(e) => Err(format!("{url}: {}", transport(&e))),
    }
}

fn answer(url: &str, result: Result<ureq::Response, ureq::Error>) -> Result<Value, String> {
    match result {
        Ok(r) => {
            let text = r
                .into_string()
                .map_err(|e| format!("{url}: reading the answer: {e}"))?;
            serde_json::from_str(&text).map_err(|_| format!("{url}: the answer is not JSON"))
        }
        Err(ureq::Error::Status(code, r)) => {
            let body: Value = r
                .into_string()
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            let field = |k: &str| {
                body.get(k)
                    .and_then(Value::as_str)
                    .or_else(|| body.get("error")?.get(k)?.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let (error, description) = match body.get("error") {
                Some(Value::String(e)) => (e.clone(), field("error_description")),
                // Google APIs: {"error": {"code": 403, "message": "...", "status": "..."}}
                Some(Value::Object(_)) => (field("status"), field("message")),
                _ => (String::new(), String::new()),
            };
            Err(format!("{url}: HTTP {code} {error} {description}")
                .trim_end()
                .to_string())
        }
        Err(e) => Err(format!("{url}: {}", transport(&e))),
    }
}

fn transport(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Transport(t) => t.to_string(),
        other => other.to_string(),
    }
}

/// A number of seconds that a token service sends as a number or a numeric string.
pub fn seconds(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `access_token` and `expires_in` of an OAuth token answer (RFC 6749 5.1).
pub fn oauth_token(body: &Value, url: &str) -> Result<(String, u64), String> {
    let token = body
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("{url}: no access_token in the answer"))?;
    let expires_in = seconds(body.get("expires_in"))
        .ok_or_else(|| format!("{url}: no expires_in in the answer"))?;
    Ok((token.to_string(), expires_in))
}
