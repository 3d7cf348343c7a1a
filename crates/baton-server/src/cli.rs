//! Client subcommands of the `baton` binary that talk to a running cluster's native API:
//! `baton tokens create|list|rotate|revoke`. Output is a table, or JSON with `--json`.
//! Exit codes: 0 done, 1 the cluster refused or could not be reached, 2 bad usage.

use std::time::Duration;

use serde_json::Value;

/// Where and as whom to call.
pub struct Target {
    /// Base URL of any node, e.g. `http://127.0.0.1:7001`.
    pub url: String,
    /// The caller's token.
    pub token: String,
    /// Print JSON instead of a table.
    pub json: bool,
}

/// A failed call: what to print, and the exit code.
pub struct Failure {
    /// The message for stderr.
    pub message: String,
    /// 1: refused or unreachable; 2: bad usage.
    pub code: u8,
}

fn failure(message: impl Into<String>) -> Failure {
    Failure { message: message.into(), code: 1 }
}

/// Calls `method path` with an optional JSON body and returns the JSON answer of a 2xx.
pub fn call(
    target: &Target,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failure(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if target.url.starts_with("http://") {
            // No CA store needed (nor, in a bare container, available).
            builder = builder.tls_backend_preconfigured(baton_net::tls::plain_http_only());
        }
        let client = builder.build().map_err(|e| failure(e.to_string()))?;
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| failure(e.to_string()))?;
        let url = format!("{}{path}", target.url.trim_end_matches('/'));
        let mut request = client.request(method, &url).bearer_auth(&target.token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response =
            request.send().await.map_err(|e| failure(format!("cannot reach {url}: {e}")))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| failure(e.to_string()))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            Ok(value)
        } else {
            let message = value
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| value.to_string(), str::to_owned);
            Err(failure(format!("{status}: {message}")))
        }
    })
}

/// Prints identities (one object or a list) as a table or JSON.
pub fn print_identities(target: &Target, value: &Value) {
    if target.json {
        println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        return;
    }
    let rows: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    let field = |v: &Value, k: &str| match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    };
    println!("{:<24} {:<7} {:<16} {:<8} STATE", "NAME", "ROLE", "TENANT", "SIGNS");
    for row in &rows {
        let state =
            if row.get("revoked_at").is_some_and(|v| !v.is_null()) { "revoked" } else { "active" };
        println!(
            "{:<24} {:<7} {:<16} {:<8} {}",
            field(row, "name"),
            field(row, "role"),
            field(row, "tenant"),
            field(row, "signing_key"),
            state
        );
    }
    for row in rows {
        if let Some(token) = row.get("token").and_then(Value::as_str) {
            println!("\ntoken for {} (shown once; store it now):\n{token}", field(row, "name"));
        }
        if let Some(key) = row.get("api_key").and_then(Value::as_str) {
            println!("API key (request signing; shown once):\n{key}");
        }
    }
}
