//! Credential-process commands: a program whose output is the token or the credentials.
//!
//! Contract: [`Command::run`] runs `argv` (no shell) with stdin closed, `{resource}`,
//! `{audience}` and `{scopes}` in arguments replaced by the request's values (a value starting
//! with `-` is refused, so a caller cannot pass an option), and kills it after its timeout. It
//! fails on a non-zero exit, a time-out or more than [`MAX_OUTPUT`] bytes. The output is never
//! logged, nor is stderr (it may echo secrets); errors name the program and the exit status.
//!
//! Formats, told apart by the output itself ([`parse_token`], [`parse_credentials`]):
//! - `az account get-access-token -o json`: `{"accessToken", "expires_on" (epoch seconds,
//!   az 2.54+) , "expiresOn" (local time), ...}`; without `expires_on`, the token's own `exp`
//!   claim (Entra tokens are JWTs);
//! - `gcloud auth print-access-token`: the token alone on a line. gcloud prints no expiry, so
//!   the token is taken to last `plain_lifetime` seconds (default [`PLAIN_LIFETIME`]) from the
//!   run: gcloud may hand out a cached token with only minutes left, so this is kept short and
//!   the command re-run half-way;
//! - `aws configure export-credentials --format process` (the `credential_process` format):
//!   `{"Version": 1, "AccessKeyId", "SecretAccessKey", "SessionToken"?, "Expiration"?}`;
//!   long-term keys without `Expiration` are taken to last `plain_lifetime`.
//! - any OAuth token answer `{"access_token", "expires_in"}`.

use std::io::Read;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::identity::aws::Credentials;
use crate::identity::fetched::{Fetch, FetchKey, Lease};
use crate::identity::source::TimeClaims;
use crate::identity::unix_secs;

/// Output past this is an error (a token or credentials are a few KiB).
pub const MAX_OUTPUT: usize = 1 << 20;
/// Assumed lifetime of a token or keys whose output says none.
pub const PLAIN_LIFETIME: u64 = 300;
/// Default time limit of one run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Command {
    pub argv: Vec<String>,
    pub timeout: Duration,
    pub plain_lifetime: u64,
}

impl Command {
    /// Runs the command for `key`; its standard output.
    pub fn run(&self, key: &FetchKey) -> Result<String, String> {
        let (program, args) = self.argv.split_first().ok_or("empty argv")?;
        let mut argv = Vec::with_capacity(args.len());
        for a in args {
            argv.push(substitute(a, key)?);
        }
        let mut child = Process::new(program)
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{program}: cannot start: {e}"))?;
        // Read on another thread so a chatty command cannot block on a full pipe while we
        // wait for it.
        let stdout = child.stdout.take();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(s) = stdout {
                let _ = s.take(MAX_OUTPUT as u64 + 1).read_to_end(&mut out);
            }
            out
        });
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{program}: timed out after {} s",
                        self.timeout.as_secs_f32()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(format!("{program}: {e}")),
            }
        };
        let out = reader
            .join()
            .map_err(|_| format!("{program}: reading its output failed"))?;
        if !status.success() {
            return Err(format!("{program}: {status}"));
        }
        if out.len() > MAX_OUTPUT {
            return Err(format!("{program}: more than {MAX_OUTPUT} bytes of output"));
        }
        String::from_utf8(out).map_err(|_| format!("{program}: output is not UTF-8"))
    }
}

fn substitute(arg: &str, key: &FetchKey) -> Result<String, String> {
    let mut out = arg.to_string();
    for (name, value) in [
        ("{resource}", &key.audience),
        ("{audience}", &key.audience),
        ("{scopes}", &key.scopes),
    ] {
        if out.contains(name) {
            if value.starts_with('-') {
                return Err(format!("refusing a value starting with '-' for {name}"));
            }
            out = out.replace(name, value);
        }
    }
    Ok(out)
}

/// A token from az JSON, an OAuth answer or a plain token, at `now`.
pub fn parse_token(output: &str, now: u64, plain_lifetime: u64) -> Result<Lease<String>, String> {
    let text = output.trim();
    if text.starts_with('{') {
        let v: Value = serde_json::from_str(text).map_err(|_| "output is not valid JSON")?;
        let token = v
            .get("accessToken")
            .or_else(|| v.get("access_token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or("no accessToken or access_token in the output")?;
        let expires_at = super::http::seconds(v.get("expires_on"))
            .or_else(|| super::http::seconds(v.get("expires_in")).map(|s| now + s))
            .or_else(|| TimeClaims::of(token).exp)
            .unwrap_or(now + plain_lifetime);
        return Ok(Lease {
            value: token.to_string(),
            issued_at: now,
            expires_at,
        });
    }
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err("the output is not a token".into());
    }
    Ok(Lease {
        value: token.to_string(),
        issued_at: now,
        expires_at: now + plain_lifetime,
    })
}

/// Credentials in the `credential_process` format, at `now`.
pub fn parse_credentials(
    output: &str,
    now: u64,
    plain_lifetime: u64,
) -> Result<Lease<Credentials>, String> {
    let v: Value =
        serde_json::from_str(output.trim()).map_err(|_| "output is not valid JSON".to_string())?;
    if v.get("Version").and_then(Value::as_u64) != Some(1) {
        return Err("not credential_process output (Version 1)".into());
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (id, secret) = (s("AccessKeyId"), s("SecretAccessKey"));
    if id.is_empty() || secret.is_empty() {
        return Err("no AccessKeyId or SecretAccessKey in the output".into());
    }
    let expiration = match v.get("Expiration").and_then(Value::as_str) {
        Some(e) => super::parse_rfc3339(e).ok_or("Expiration is not an RFC 3339 time")?,
        None => now + plain_lifetime,
    };
    Ok(Lease {
        value: Credentials {
            access_key_id: id,
            secret_access_key: secret,
            token: s("SessionToken"),
            last_updated: now,
            expiration,
        },
        issued_at: now,
        expires_at: expiration,
    })
}

/// Tokens from a command.
#[derive(Debug)]
pub struct CommandTokens(pub Command);

impl Fetch<String> for CommandTokens {
    fn source_kind(&self) -> &'static str {
        "command"
    }
    fn fetch(&self, key: &FetchKey) -> Result<Lease<String>, String> {
        let out = self.0.run(key)?;
        let program = self.0.argv.first().map_or("", String::as_str);
        parse_token(&out, unix_secs(SystemTime::now()), self.0.plain_lifetime)
            .map_err(|e| format!("{program}: {e}"))
    }
}

/// AWS credentials from a command.
#[derive(Debug)]
pub struct CommandCredentials(pub Command);

impl Fetch<Credentials> for CommandCredentials {
    fn source_kind(&self) -> &'static str {
        "command"
    }
    fn fetch(&self, key: &FetchKey) -> Result<Lease<Credentials>, String> {
        let out = self.0.run(key)?;
        let program = self.0.argv.first().map_or("", String::as_str);
        parse_credentials(&out, unix_secs(SystemTime::now()), self.0.plain_lifetime)
            .map_err(|e| format!("{program}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout_ms: u64) -> Command {
        Command {
            argv: vec![
                "sh".into(),
                "-c".into(),
                script.into(),
                "sh".into(),
                "{resource}".into(),
            ],
            timeout: Duration::from_millis(timeout_ms),
            plain_lifetime: PLAIN_LIFETIME,
        }
    }

    fn key(aud: &str) -> FetchKey {
        FetchKey {
            audience: aud.into(),
            scopes: String::new(),
        }
    }

    #[test]
    fn the_three_cli_formats_parse() {
        let az = r#"{"accessToken": "eyJ.az.tok", "expiresOn": "2026-01-01 10:00:00.000000",
            "expires_on": 1767261600, "subscription": "s", "tenant": "t", "tokenType": "Bearer"}"#;
        let l = parse_token(az, 1_767_258_000, 300).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (l.value.as_str(), l.expires_at),
            ("eyJ.az.tok", 1_767_261_600)
        );
        let gcloud = "ya29.a0AfB_byC\n";
        let l = parse_token(gcloud, 1000, 300).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((l.value.as_str(), l.expires_at), ("ya29.a0AfB_byC", 1300));
        let aws = r#"{"Version": 1, "AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "s3cr3t",
            "SessionToken": "tok", "Expiration": "2026-01-01T01:00:00+00:00"}"#;
        let l = parse_credentials(aws, 1_767_225_600, 300).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.value.access_key_id, "ASIAEXAMPLE");
        assert_eq!(l.value.token, "tok");
        assert_eq!(l.expires_at, 1_767_229_200);
        let long_term = r#"{"Version": 1, "AccessKeyId": "AKIA", "SecretAccessKey": "s"}"#;
        let l = parse_credentials(long_term, 10, 300).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((l.expires_at, l.value.token.as_str()), (310, ""));
        assert!(parse_token("two words", 0, 300).is_err());
        assert!(parse_token("{}", 0, 300).is_err());
        assert!(parse_credentials(r#"{"Version": 2}"#, 0, 300).is_err());
    }

    #[test]
    fn commands_get_the_resource_fail_and_time_out() {
        let echo = sh("echo \"token-for-$1\"", 5000);
        assert_eq!(
            echo.run(&key("https://vault.azure.net")).ok().as_deref(),
            Some("token-for-https://vault.azure.net\n")
        );
        let e = echo.run(&key("--evil")).err().unwrap_or_default();
        assert!(e.contains("refusing"), "{e}");
        let failing = sh("echo secret-output; echo secret-err >&2; exit 3", 5000);
        let e = failing.run(&key("r")).err().unwrap_or_default();
        assert!(e.contains("exit status: 3") && !e.contains("secret"), "{e}");
        let started = Instant::now();
        let e = sh("sleep 30", 300).run(&key("r")).err().unwrap_or_default();
        assert!(e.contains("timed out"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
