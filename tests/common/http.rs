//! What the service tests share as an HTTP client: a JSON POST with a bearer key, and an API key
//! written straight into a store's key file.

use std::path::Path;

use serde_json::Value;
use time::OffsetDateTime;
use vigil::serve::keys::{GeneratePolicy, Guard, KeyFile, NewKey, Scope, key_file_path};

/// One reply: the status, headers, body parsed as JSON (null when it is not) and the raw text.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

/// POSTs `body` as JSON to `url` with `key` as the bearer token.
pub async fn post_json(c: &reqwest::Client, url: &str, key: &str, body: &[u8]) -> Reply {
    let resp = c
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, headers, body, text }
}

/// Creates a key with full output and no limits in `store`'s key file, and returns it.
pub fn add_key(store: &Path, name: &str, scopes: &[Scope], generate: GeneratePolicy, guard: Guard) -> String {
    let path = key_file_path(store);
    let mut file = KeyFile::load(&path).unwrap();
    let new = NewKey {
        name: name.into(),
        scopes: scopes.to_vec(),
        expires_in: None,
        rate: None,
        budget: None,
        output: "full".parse().unwrap(),
        guard,
        generate,
    };
    let (_, key) = file.create(new, OffsetDateTime::now_utc()).unwrap();
    file.save(&path).unwrap();
    key
}
