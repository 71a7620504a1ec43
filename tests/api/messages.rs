//! The native API: `/v1/messages`, its batch form, idempotency, status and listing.

use serde_json::{Value, json};

use crate::helpers::{error_field, native_body, spawn_app, spawn_app_with, unique_rcpt};

/// A valid message is 202; without a Bearer token, 401.
#[tokio::test]
async fn create_requires_bearer_token() {
    let app = spawn_app().await;
    let r = app.post_message(&native_body("a@example.com"), None).await;
    assert_eq!(r.status(), 202);
    let r = app
        .client
        .post(app.url("/v1/messages"))
        .json(&native_body("a@example.com"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = app
        .client
        .post(app.url("/v1/messages"))
        .bearer_auth("wrong")
        .json(&native_body("a@example.com"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 401);
}

/// Each invalid field is a 400 naming it.
#[tokio::test]
async fn field_errors_name_the_field() {
    let app = spawn_app().await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"to": "a@example.com", "subject": "s", "text": "t"}),
            "from",
        ),
        (
            json!({"from": "not an address", "to": "a@example.com", "subject": "s", "text": "t"}),
            "from",
        ),
        (
            json!({"from": "a@example.com", "subject": "s", "text": "t"}),
            "to",
        ),
        (
            json!({"from": "a@example.com", "to": ["ok@example.com", "bad@"], "subject": "s", "text": "t"}),
            "to[1]",
        ),
        (
            json!({"from": "a@example.com", "to": "b@example.com", "cc": "c@example.com\r\nBcc: x@example.com", "subject": "s", "text": "t"}),
            "cc[0]",
        ),
        (
            json!({"from": "a@example.com", "to": "b@example.com", "subject": "", "text": "t"}),
            "subject",
        ),
        (
            json!({"from": "a@example.com", "to": "b@example.com", "subject": "s\r\nBcc: x@example.com", "text": "t"}),
            "subject",
        ),
        (
            json!({"from": "a@example.com", "to": "b@example.com", "subject": "s"}),
            "text",
        ),
        (
            json!({"from": "a@example.com", "to": "b@example.com", "subject": 7, "text": "t"}),
            "subject",
        ),
        (
            json!({"from": "a@example.com", "to": "b@example.com", "subject": "s", "text": "t", "headers": {"Bcc": "x@example.com"}}),
            "headers.Bcc",
        ),
        (
            json!({"from": "a@example.com", "to": "b@example.com", "subject": "s", "text": "t", "headers": {"X-A": "1\nBcc: x@example.com"}}),
            "headers.X-A",
        ),
        (
            json!({"from": "a@example.com", "to": "b@example.com", "subject": "s", "text": "t", "headers": {"X A": "1"}}),
            "headers.X A",
        ),
        (
            json!({"from": "a@example.com", "to": "b@example.com", "subject": "s", "text": "t", "tags": ["ok", "not ok"]}),
            "tags[1]",
        ),
        (
            json!({"from": "a@example.com", "to": "b@example.com", "subject": "s", "text": "t", "reply_to": "Name\n <r@example.com>"}),
            "reply_to[0]",
        ),
    ];
    for (body, field) in cases {
        let (code, got) = error_field(app.post_message(&body, None).await, 400).await;
        assert_eq!(
            (code.as_str(), got.as_str()),
            ("invalid_field", field),
            "{body}"
        );
    }
    let many: Vec<String> = (0..51).map(|i| format!("r{i}@example.com")).collect();
    let body = json!({"from": "a@example.com", "to": many, "subject": "s", "text": "t"});
    let r = app.post_message(&body, None).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("JSON");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .contains("limit is 50"),
        "{v}"
    );
}

/// The same Idempotency-Key and body answer the first response again and make no second
/// message; the same key with another body is 422.
#[tokio::test]
async fn idempotency_key_replays_or_rejects() {
    let app = spawn_app().await;
    let body = native_body(&unique_rcpt("idem"));
    let first = app.post_message(&body, Some("order-42")).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("JSON");
    let again = app.post_message(&body, Some("order-42")).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.expect("JSON");
    assert_eq!(first, again);
    assert_eq!(app.message_count().await, 1);
    // The same JSON rebuilt by the client's retry: other spacing, keys in another order.
    let mut fields: Vec<(String, Value)> = body
        .as_object()
        .expect("object")
        .clone()
        .into_iter()
        .collect();
    fields.reverse();
    let rebuilt = format!(
        "{{ {} }}",
        fields
            .iter()
            .map(|(k, v)| format!("{} :  {}", json!(k), v))
            .collect::<Vec<_>>()
            .join(" ,\n ")
    );
    let r = app
        .client
        .post(app.url("/v1/messages"))
        .bearer_auth(&app.token)
        .header("content-type", "application/json")
        .header("idempotency-key", "order-42")
        .body(rebuilt.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 202, "{rebuilt}");
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(app.message_count().await, 1);

    let other = native_body(&unique_rcpt("idem-other"));
    let (code, _) = error_field(app.post_message(&other, Some("order-42")).await, 422).await;
    assert_eq!(code, "idempotency_key_reused");
    let (code, field) = error_field(
        app.post_message(&body, Some("bad key with spaces")).await,
        400,
    )
    .await;
    assert_eq!(
        (code.as_str(), field.as_str()),
        ("invalid_field", "Idempotency-Key")
    );
}

/// A batch's Idempotency-Key works as a single message's: the same batch again is the first
/// answer with no new message, another batch under the key is 422.
#[tokio::test]
async fn a_batch_idempotency_key_replays_or_rejects() {
    let app = spawn_app().await;
    let post = |body: Value| {
        app.client
            .post(app.url("/v1/messages/batch"))
            .bearer_auth(&app.token)
            .header("idempotency-key", "batch-7")
            .json(&body)
            .send()
    };
    let batch =
        json!({"messages": [native_body(&unique_rcpt("b1")), native_body(&unique_rcpt("b2"))]});
    let first = post(batch.clone()).await.expect("sent");
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("JSON");
    let again = post(batch).await.expect("sent");
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.expect("JSON"), first);
    assert_eq!(app.message_count().await, 2);
    let other = json!({"messages": [native_body(&unique_rcpt("b3"))]});
    let (code, _) = error_field(post(other).await.expect("sent"), 422).await;
    assert_eq!(code, "idempotency_key_reused");
    assert_eq!(app.message_count().await, 2);
}

/// MAX_BODY_BYTES holds for a body sent in chunks, with no Content-Length to refuse it by: a 413
/// naming the limit, and nothing recorded; a body of exactly the limit is taken.
#[tokio::test]
async fn the_body_limit_holds_for_chunked_bodies() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const LIMIT: usize = 4096;
    let app = spawn_app_with(|c| c.max_body_bytes = LIMIT).await;
    let chunked = |body: &str| {
        let mut request = format!(
            "POST /v1/messages HTTP/1.1\r\nHost: mailroom\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            app.token
        );
        for chunk in body.as_bytes().chunks(1000) {
            request.push_str(&format!("{:x}\r\n", chunk.len()));
            request.push_str(std::str::from_utf8(chunk).expect("ASCII"));
            request.push_str("\r\n");
        }
        request.push_str("0\r\n\r\n");
        request
    };
    let host = app.address.trim_start_matches("http://").to_string();
    let answer = |request: String| {
        let host = host.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(host)
                .await
                .expect("connected");
            stream.write_all(request.as_bytes()).await.expect("written");
            let mut response = String::new();
            stream.read_to_string(&mut response).await.expect("read");
            response
        }
    };
    let padded = |size: usize| {
        let body = native_body(&unique_rcpt("chunked")).to_string();
        format!("{body}{}", " ".repeat(size - body.len()))
    };
    let over = answer(chunked(&padded(2 * LIMIT))).await;
    assert!(over.starts_with("HTTP/1.1 413"), "{over}");
    assert!(
        over.contains(&LIMIT.to_string()),
        "the limit is named: {over}"
    );
    assert_eq!(app.message_count().await, 0);
    let at = answer(chunked(&padded(LIMIT))).await;
    assert!(at.starts_with("HTTP/1.1 202"), "{at}");
    assert_eq!(app.message_count().await, 1);
}

/// Concurrent requests with one key make one message; every answer carries its id.
#[tokio::test]
async fn concurrent_idempotent_requests_make_one_message() {
    let app = spawn_app().await;
    let body = native_body(&unique_rcpt("race"));
    let answers =
        futures::future::join_all((0..8).map(|_| app.post_message(&body, Some("race-1")))).await;
    let mut ids = Vec::new();
    for r in answers {
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.expect("JSON");
        ids.push(v["message_id"].as_str().expect("id").to_string());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.message_count().await, 1);
}

/// A batch answers per message: valid ones are queued, invalid ones named by index and field.
#[tokio::test]
async fn batch_answers_per_message() {
    let app = spawn_app().await;
    let body = json!({"messages": [
        native_body("a@example.com"),
        {"from": "a@example.com", "to": "b@example.com", "subject": "s\nBcc: x@example.com", "text": "t"},
        native_body("c@example.com"),
    ]});
    let r = app.post_batch(&body).await;
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.expect("JSON");
    assert_eq!(v["accepted"], 2);
    assert_eq!(v["rejected"], 1);
    assert_eq!(v["results"][1]["error"]["field"], "messages[1].subject");
    assert!(v["results"][0]["message_id"].is_string() && v["results"][2]["message_id"].is_string());

    let too_many = json!({"messages": vec![native_body("a@example.com"); 101]});
    let (_, field) = error_field(app.post_batch(&too_many).await, 400).await;
    assert_eq!(field, "messages");
    let (_, field) = error_field(app.post_batch(&json!({"messages": []})).await, 400).await;
    assert_eq!(field, "messages");
    let all_bad = json!({"messages": [{"to": 1}]});
    assert_eq!(app.post_batch(&all_bad).await.status(), 400);
}

/// Status lookups: 404 for an unknown id, 400 for a malformed one; listing filters by status.
#[tokio::test]
async fn status_and_listing() {
    let app = spawn_app().await;
    let id = app.send_to(&unique_rcpt("list")).await;
    let r = app
        .get(&format!("/v1/messages/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(error_field(r, 404).await.0, "not_found");
    let r = app.get("/v1/messages/not-a-uuid").await;
    assert_eq!(error_field(r, 400).await.1, "id");
    let queued: Value = app.get_json("/v1/messages?status=queued").await;
    assert_eq!(queued["messages"][0]["id"], id.as_str());
    let delivered: Value = app.get_json("/v1/messages?status=delivered").await;
    assert_eq!(delivered["messages"].as_array().expect("array").len(), 0);
    assert_eq!(
        error_field(app.get("/v1/messages?status=lost").await, 400)
            .await
            .1,
        "status"
    );
    assert_eq!(
        error_field(app.get("/v1/messages?limit=0").await, 400)
            .await
            .1,
        "limit"
    );
    assert_eq!(
        error_field(app.get("/v1/messages?limit=abc").await, 400)
            .await
            .1,
        "limit"
    );
    assert_eq!(app.get("/v1/messages").await.status(), 200);
    assert_eq!(app.get_public("/v1/messages").await.status(), 401);
    assert_eq!(
        error_field(app.get("/nowhere").await, 404).await.0,
        "not_found"
    );
}

/// What axum would answer in plain text, or not at all, is a JSON error too: a repeated or
/// unknown list parameter (a misspelt `stauts` would otherwise list every message), an id that
/// is not even UTF-8 (after the token is checked), and a method a route does not take.
#[tokio::test]
async fn odd_queries_paths_and_methods_get_json_errors() {
    let app = spawn_app().await;
    for (path, field) in [
        ("/v1/messages?status=queued&status=dead", "status"),
        ("/v1/messages?limit=1&limit=2", "limit"),
        ("/v1/messages?stauts=dead", "stauts"),
        ("/v1/dead-letters?before=x&before=y", "before"),
        ("/v1/dead-letters?page=2", "page"),
        ("/v1/dead-letters?status=delivered", "status"),
        ("/v1/messages?status=%FF", "status"),
        ("/v1/messages/%FF", "id"),
    ] {
        assert_eq!(
            error_field(app.get(path).await, 400).await.1,
            field,
            "{path}"
        );
    }
    let r = app.get_public("/v1/messages/%FF").await;
    assert_eq!(error_field(r, 401).await.0, "unauthorized");
    let r = app
        .client
        .post(app.url("/v1/dead-letters/%FF/redrive"))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(error_field(r, 400).await.1, "id");
    for (method, path) in [
        (reqwest::Method::DELETE, "/v1/messages"),
        (reqwest::Method::GET, "/api/email"),
        (reqwest::Method::PUT, "/v1/messages/batch"),
    ] {
        let r = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(&app.token)
            .send()
            .await
            .expect("sent");
        assert!(r.headers().contains_key("allow"), "{method} {path}");
        let code = error_field(r, 405).await.0;
        assert_eq!(code, "method_not_allowed", "{method} {path}");
    }
}

/// Health, readiness and metrics answer without a token.
#[tokio::test]
async fn health_ready_and_metrics() {
    let app = spawn_app().await;
    let r = app.get_public("/health").await;
    assert_eq!(r.status(), 200);
    let r = app.get_public("/ready").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("JSON");
    assert_eq!(v["checks"]["store"], "ok");
    app.send_to(&unique_rcpt("metrics")).await;
    let text = app.get_public("/metrics").await.text().await.expect("text");
    assert!(
        text.contains("mailroom_messages_accepted_total{api=\"native\"}"),
        "{text}"
    );
    assert!(
        text.contains(
            "mailroom_http_requests_total{method=\"POST\",route=\"/v1/messages\",status=\"202\"}"
        ),
        "{text}"
    );
}

/// With METRICS_PORT set, `/metrics` moves to that port and leaves the API port.
#[tokio::test]
async fn metrics_on_their_own_port() {
    let app = crate::helpers::spawn_app_with(|c| c.metrics_port = Some(0)).await;
    let metrics = app.metrics_address.clone().expect("a metrics listener");
    app.send_to(&unique_rcpt("metrics-port")).await;
    let r = app
        .client
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .expect("text")
            .contains("mailroom_messages_accepted_total")
    );
    let r = app.get_public("/metrics").await;
    assert_eq!(r.status(), 404);
}

/// `GET /openapi.json` documents every route with its methods, and real answers have the shapes
/// it documents: every key a documented property, every required property present.
#[tokio::test]
async fn openapi_matches_real_answers() {
    let app = spawn_app().await;
    let r = app.get_public("/openapi.json").await;
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.expect("JSON");
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.1")
    );
    let mut documented: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("an item").keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.sort();
    let mut routes = [
        "POST /api/email",
        "POST /v1/messages",
        "GET /v1/messages",
        "POST /v1/messages/batch",
        "GET /v1/messages/{id}",
        "POST /v1/messages/{id}/cancel",
        "GET /v1/dead-letters",
        "POST /v1/dead-letters/{id}/redrive",
        "GET /health",
        "GET /ready",
        "GET /metrics",
        "GET /openapi.json",
    ];
    routes.sort();
    assert_eq!(documented, routes);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // The compat token may come in a Bearer header instead: optional in the body, and an
    // alternative without the scheme in the operation's security.
    let (_, required) = properties(&doc, "CompatRequest");
    assert_eq!(required, ["data"]);
    let security = &doc["paths"]["/api/email"]["post"]["security"];
    assert!(
        security
            .as_array()
            .is_some_and(|s| s.contains(&json!({})) && s.contains(&json!({"bearer": []}))),
        "{security}"
    );
    // What the API takes: one address or a list; `send_at` as a time or as Unix seconds.
    let native = &doc["components"]["schemas"]["NativeEmail"]["properties"];
    for field in ["to", "cc", "bcc", "reply_to"] {
        let kinds: Vec<&Value> = native[field]["oneOf"]
            .as_array()
            .unwrap_or_else(|| panic!("{field}: {}", native[field]))
            .iter()
            .map(|k| &k["type"])
            .collect();
        assert_eq!(kinds, [&json!("string"), &json!("array")], "{field}");
    }
    // The limits the API holds requests to are stated, and are the ones it holds them to.
    use mailroom::message::{MAX_ATTACHMENTS, MAX_RECIPIENTS, MAX_SUBJECT_CHARS, MAX_TAGS};
    assert_eq!(native["to"]["oneOf"][1]["maxItems"], MAX_RECIPIENTS);
    assert_eq!(native["tags"]["maxItems"], MAX_TAGS);
    assert_eq!(native["attachments"]["maxItems"], MAX_ATTACHMENTS);
    assert_eq!(native["subject"]["maxLength"], MAX_SUBJECT_CHARS);
    assert_eq!(
        doc["components"]["schemas"]["BatchRequest"]["properties"]["messages"]["maxItems"],
        mailroom::api::MAX_BATCH
    );
    // Every operation has an id of its own (client generators need them unique).
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().expect("an item").values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let operations = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), operations, "operation ids repeat: {ids:?}");
    for path in ["/v1/messages", "/v1/dead-letters"] {
        let limit = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == "limit")
            .expect("a limit")["schema"]
            .clone();
        assert_eq!(
            (&limit["minimum"], &limit["maximum"]),
            (&json!(1), &json!(500)),
            "{path}"
        );
    }
    // A batch whose every message is invalid is a 400 with the batch's own answer.
    let refusal = doc["paths"]["/v1/messages/batch"]["post"]["responses"]["400"].to_string();
    assert!(refusal.contains("BatchRefusal"), "{refusal}");
    let one_of = doc["components"]["schemas"]["BatchRefusal"]["oneOf"].to_string();
    assert!(
        one_of.contains("ErrorBody") && one_of.contains("BatchResult"),
        "{one_of}"
    );
    let described = doc["components"]["schemas"]["NativeEmail"]["description"].to_string();
    assert!(!described.contains("::"), "no Rust paths: {described}");
    let send_at = native["send_at"]["oneOf"].to_string();
    assert!(
        send_at.contains("date-time") && send_at.contains("integer"),
        "{send_at}"
    );
    // Every route that reads or writes the store says what a store that is down answers.
    for route in &routes {
        let (method, path) = route.split_once(' ').expect("METHOD /path");
        if ["/health", "/ready", "/metrics", "/openapi.json"].contains(&path) {
            continue;
        }
        let responses = &doc["paths"][path][method.to_lowercase()]["responses"];
        assert!(
            responses["503"].is_object(),
            "{route}: no 503 in {responses}"
        );
    }

    let conforms = |schema: &str, v: &Value| {
        let (props, required) = properties(&doc, schema);
        let keys: Vec<&String> = v.as_object().expect("an object").keys().collect();
        for k in &keys {
            assert!(props.contains(k), "{schema}: {k} is not documented ({v})");
        }
        for k in &required {
            assert!(keys.contains(&k), "{schema}: required {k} missing ({v})");
        }
    };
    let rcpt = unique_rcpt("openapi");
    let r = app.post_message(&native_body(&rcpt), None).await;
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.expect("JSON");
    conforms("AcceptedMessage", &accepted);
    let id = accepted["message_id"].as_str().expect("id");
    conforms("MessageDetail", &app.get_message(id).await);
    let page: Value = app.get_json("/v1/messages?limit=5").await;
    conforms("MessagePage", &page);
    conforms("MessageSummary", &page["messages"][0]);
    let r = app
        .post_message(&json!({"to": ["a@example.com"], "subject": "s"}), None)
        .await;
    let error: Value = r.json().await.expect("JSON");
    conforms("ErrorBody", &error);
    conforms("ErrorDetail", &error["error"]);
    let batch = json!({"messages": [native_body(&rcpt), {"subject": "no recipient"}]});
    let result: Value = app.post_batch(&batch).await.json().await.expect("JSON");
    conforms("BatchResult", &result);
    conforms("BatchEntry", &result["results"][0]);
    conforms("BatchEntry", &result["results"][1]);
    let ready: Value = app.get_public("/ready").await.json().await.expect("JSON");
    conforms("Readiness", &ready);
}

/// The property names and required names of a component schema, following `allOf` and `$ref`.
fn properties(doc: &Value, name: &str) -> (Vec<String>, Vec<String>) {
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    let mut props = Vec::new();
    let mut required = Vec::new();
    let mut parts = vec![schema.clone()];
    while let Some(part) = parts.pop() {
        if let Some(r) = part["$ref"].as_str() {
            let other = r.rsplit('/').next().expect("a name");
            parts.push(doc["components"]["schemas"][other].clone());
            continue;
        }
        if let Some(all) = part["allOf"].as_array() {
            parts.extend(all.iter().cloned());
        }
        if let Some(p) = part["properties"].as_object() {
            props.extend(p.keys().cloned());
        }
        if let Some(r) = part["required"].as_array() {
            required.extend(r.iter().filter_map(|v| v.as_str().map(String::from)));
        }
    }
    (props, required)
}
