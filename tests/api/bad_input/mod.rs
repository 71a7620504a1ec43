//! The bad-input corpus: well over 500 malformed requests (broken JSON, wrong types, huge and
//! deeply nested bodies, invalid UTF-8, header injection in every header-bound field, wrong
//! content types, oversized batches, bad tokens and keys), each answered with the exact 4xx it
//! deserves and a message that says what is wrong (naming the field where there is one); none a
//! 5xx, none leaving a record behind, and the server still serving afterwards.

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{TestApp, compat_body, native_body, spawn_app};

mod bodies;
mod credentials;
mod fields;

const COMPAT: &str = "/api/email";
const NATIVE: &str = "/v1/messages";
const BATCH: &str = "/v1/messages/batch";

#[derive(Clone)]
enum Auth {
    /// The app's own token (in the body for the compat API, in `Authorization` otherwise).
    Good,
    /// This exact `Authorization` header value, or none.
    Header(Option<Vec<u8>>),
}

struct Case {
    name: String,
    path: &'static str,
    content_type: Option<String>,
    auth: Auth,
    extra_header: Option<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
    status: u16,
    /// What `error.field` (or a batch entry's) must start with, when there is one field to blame.
    field: Option<String>,
}

impl Case {
    fn json(name: impl Into<String>, path: &'static str, body: &Value, status: u16) -> Self {
        Self::bytes(name, path, serde_json::to_vec(body).expect("JSON"), status)
    }

    fn bytes(name: impl Into<String>, path: &'static str, body: Vec<u8>, status: u16) -> Self {
        Self {
            name: name.into(),
            path,
            content_type: Some("application/json".into()),
            auth: Auth::Good,
            extra_header: None,
            body,
            status,
            field: None,
        }
    }

    fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

/// A compat request whose `data.<field>` is `value`, refused with 400 naming that field.
fn compat_field(token: &str, name: &str, field: &str, value: Value) -> Case {
    Case::json(
        format!("compat {name}"),
        COMPAT,
        &compat_with(token, field, value),
        400,
    )
    .field(format!("data.{field}"))
}

/// A native request whose `field` is `value`, refused with 400 naming `blamed`.
fn native_field(name: &str, field: &str, value: Value, blamed: impl Into<String>) -> Case {
    Case::json(
        format!("native {name}"),
        NATIVE,
        &native_with(field, value),
        400,
    )
    .field(blamed)
}

/// The compat body with `data.<name>` set to `value`.
fn compat_with(token: &str, name: &str, value: Value) -> Value {
    let mut b = compat_body(token);
    b["data"][name] = value;
    b
}

/// The native body with `name` set to `value`.
fn native_with(name: &str, value: Value) -> Value {
    let mut b = native_body("someone@example.com");
    b[name] = value;
    b
}

/// Strings that must never reach an SMTP header: line breaks (the injection itself) and other
/// control characters, each at the start, in the middle and at the end of an otherwise good value.
fn injections(good: &str) -> Vec<(String, String)> {
    let payloads = [
        ("crlf-bcc", "\r\nBcc: victim@evil.example"),
        ("lf-bcc", "\nBcc: victim@evil.example"),
        ("cr-header", "\rX-Injected: yes"),
        ("crlf-body", "\r\n\r\nInjected body"),
        ("double-crlf", "\r\n\r\n"),
        ("nul", "\0"),
        ("vertical-tab", "\u{0b}"),
        ("escape", "\u{1b}[31m"),
        ("next-line", "\u{85}Bcc: x@evil.example"),
    ];
    let mut out = Vec::new();
    for (name, p) in payloads {
        out.push((format!("{name}-start"), format!("{p}{good}")));
        out.push((format!("{name}-end"), format!("{good}{p}")));
        let mid = good.len() / 2;
        let (a, b) = good.split_at(mid);
        out.push((format!("{name}-middle"), format!("{a}{p}{b}")));
    }
    out
}

/// Values of the wrong JSON type for a string field.
fn not_strings() -> Vec<(&'static str, Value)> {
    vec![
        ("int", json!(1)),
        ("negative", json!(-7)),
        ("float", json!(1.5)),
        ("true", json!(true)),
        ("false", json!(false)),
        ("empty-array", json!([])),
        ("array", json!(["a@example.com"])),
        ("object", json!({"a": "b"})),
        ("empty-object", json!({})),
    ]
}

fn corpus(token: &str) -> Vec<Case> {
    let mut cases = bodies::cases(token);
    cases.extend(fields::compat(token));
    cases.extend(fields::native());
    cases.extend(credentials::cases(token));
    cases
}

async fn send(app: &TestApp, case: &Case) -> reqwest::Response {
    let mut req = app.client.post(app.url(case.path)).body(case.body.clone());
    if let Some(ct) = &case.content_type {
        req = req.header("content-type", ct.as_str());
    }
    match &case.auth {
        Auth::Good if case.path != COMPAT => req = req.bearer_auth(&app.token),
        Auth::Good => {}
        Auth::Header(Some(v)) => {
            req = req.header(
                "authorization",
                reqwest::header::HeaderValue::from_bytes(v).expect("a header value"),
            )
        }
        Auth::Header(None) => {}
    }
    if let Some((name, value)) = &case.extra_header {
        req = req.header(
            *name,
            reqwest::header::HeaderValue::from_bytes(value).expect("a header value"),
        );
    }
    req.send().await.expect("answered, not hung up on")
}

/// What is wrong with the answer to one case, if anything.
async fn judge(case: &Case, r: reqwest::Response) -> Option<String> {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    if status != case.status {
        return Some(format!("got {status}, want {}: {text:.300}", case.status));
    }
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return Some(format!("the body is not JSON: {text:.300}"));
    };
    // A batch whose every entry is bad answers per entry; everything else with one error.
    let error = if v["error"].is_object() {
        v["error"].clone()
    } else {
        v["results"][0]["error"].clone()
    };
    let message = error["message"].as_str().unwrap_or_default();
    if error["code"].as_str().unwrap_or_default().is_empty() || message.len() < 10 {
        return Some(format!("no useful error: {v}"));
    }
    if let Some(want) = &case.field {
        let field = error["field"].as_str().unwrap_or_default();
        // A batch whose every entry is bad names the field within its entry.
        let batch_field = if v["results"].is_array() {
            format!("messages[0].{field}")
        } else {
            field.to_string()
        };
        // The field named is the one wanted, or a part of it (`to[1]` for `to`).
        let names = |f: &str| {
            f == want
                || f.strip_prefix(want.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        };
        let named = !field.is_empty() && (names(field) || names(&batch_field));
        if !named || !message.contains(field) {
            return Some(format!("want field {want:?}, got {error}"));
        }
    }
    None
}

#[tokio::test]
async fn the_corpus_is_refused_precisely_and_leaves_nothing_behind() {
    let app = spawn_app().await;
    let cases = corpus(&app.token);
    assert!(cases.len() >= 500, "the corpus has {} cases", cases.len());
    let failures: Vec<String> = futures::stream::iter(cases.iter())
        .map(|case| {
            let app = &app;
            async move {
                let r = send(app, case).await;
                judge(case, r)
                    .await
                    .map(|why| format!("{}: {why}", case.name))
            }
        })
        .buffer_unordered(8)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} of {} cases answered wrongly:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} bad requests, every one refused as it should be",
        cases.len()
    );

    // Nothing was stored or queued, and the server still works.
    assert_eq!(app.message_count().await, 0, "no record left behind");
    assert_eq!(app.queue.depth().await.expect("depth").messages, 0);
    assert_eq!(app.get_public("/health").await.status(), 200);
    let r = app.post_compat(&compat_body(&app.token)).await;
    assert_eq!(r.status(), 202, "a good request is still accepted");
}
