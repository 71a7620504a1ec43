//! The bad-input corpus: well over 500 malformed requests (broken JSON, wrong types, huge and
//! deeply nested bodies, invalid UTF-8, header injection in every header-bound field, wrong
//! content types, oversized batches, bad tokens and keys), each answered with the exact 4xx it
//! deserves and a message that says what is wrong (naming the field where there is one); none a
//! 5xx, none leaving a record behind, and the server still serving afterwards.

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{TestApp, compat_body, native_body, spawn_app};

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
    let mut cases = Vec::new();
    let good_compat = serde_json::to_vec(&compat_body(token)).expect("JSON");
    let good_native = serde_json::to_vec(&native_body("someone@example.com")).expect("JSON");

    // --- Broken JSON: every prefix of a valid body (a prefix of an object is never valid),
    // then classic mistakes.
    for (path, good) in [(COMPAT, &good_compat), (NATIVE, &good_native)] {
        for cut in (0..good.len()).step_by(3) {
            cases.push(Case::bytes(
                format!("{path} truncated at {cut}"),
                path,
                good[..cut].to_vec(),
                400,
            ));
        }
    }
    let broken: &[&str] = &[
        "",
        " ",
        "{",
        "}",
        "[",
        "{\"data\": {\"email_subject\": \"x\",}}",
        "{'data': {}}",
        "{data: {}}",
        "{\"data\": NaN}",
        "{\"data\": Infinity}",
        "{\"data\": undefined}",
        "{\"data\": {}} // comment",
        "/* c */ {\"data\": {}}",
        "{\"data\": {}}}",
        "{\"data\": {}} {\"data\": {}}",
        "{\"data\": \"\\x41\"}",
        "{\"data\": \"\\u12\"}",
        "{\"data\": \"unterminated}",
        "{\"data\": 01}",
        "{\"data\": .5}",
        "{\"data\": +1}",
        "{\"data\": 1e}",
        "{\"data\" {}}",
        "{\"data\": {} \"token\": \"x\"}",
        "\u{feff}{\"data\": {}}",
        "{\"data\": \"\\ud800\"}",
        "{\"data\": \"\\udc00\\ud800\"}",
        "{\"data\": tru}",
        "{\"data\": nul}",
        "<xml/>",
    ];
    for (i, text) in broken.iter().enumerate() {
        for path in [COMPAT, NATIVE, BATCH] {
            cases.push(Case::bytes(
                format!("{path} broken JSON #{i}"),
                path,
                text.as_bytes().to_vec(),
                400,
            ));
        }
    }
    // JSON that parses but is not an object.
    for (name, v) in [
        ("null", json!(null)),
        ("number", json!(42)),
        ("string", json!("hello")),
        ("array", json!([compat_body(token)])),
        ("true", json!(true)),
    ] {
        cases.push(Case::json(format!("compat body {name}"), COMPAT, &v, 400).field("body"));
        cases.push(Case::json(format!("native body {name}"), NATIVE, &v, 400).field("body"));
        cases.push(Case::json(format!("batch body {name}"), BATCH, &v, 400).field("body"));
    }

    // --- Invalid UTF-8 inside a string value, and in a key.
    let utf8: &[(&str, &[u8])] = &[
        ("ff", b"\xff"),
        ("fe", b"\xfe\xfe"),
        ("lone continuation", b"\x80"),
        ("truncated 2-byte", b"\xc3"),
        ("bad 2-byte", b"\xc3\x28"),
        ("overlong slash", b"\xc0\xaf"),
        ("overlong nul", b"\xc0\x80"),
        ("surrogate", b"\xed\xa0\x80"),
        ("truncated 3-byte", b"\xe2\x82"),
        ("above U+10FFFF", b"\xf4\x90\x80\x80"),
        ("5-byte", b"\xf8\x88\x80\x80\x80"),
    ];
    for (name, bad) in utf8 {
        let mut subject = b"{\"data\": {\"email_subject\": \"Hi ".to_vec();
        subject.extend_from_slice(bad);
        subject.extend_from_slice(
            format!(
                "\", \"email_sender\": \"S\", \"email_timestream\": \"1700000000\", \"email_content\": \"c\"}}, \"token\": \"{token}\"}}"
            )
            .as_bytes(),
        );
        cases.push(Case::bytes(
            format!("compat invalid UTF-8 {name}"),
            COMPAT,
            subject,
            400,
        ));
        let mut native = b"{\"from\": \"a@example.com\", \"to\": [\"b@example.com\"], \"subject\": \"s\", \"text\": \"".to_vec();
        native.extend_from_slice(bad);
        native.extend_from_slice(b"\"}");
        cases.push(Case::bytes(
            format!("native invalid UTF-8 {name}"),
            NATIVE,
            native,
            400,
        ));
        let mut key = b"{\"".to_vec();
        key.extend_from_slice(bad);
        key.extend_from_slice(b"\": 1}");
        cases.push(Case::bytes(
            format!("batch invalid UTF-8 key {name}"),
            BATCH,
            key,
            400,
        ));
    }

    // --- Deeply nested bodies (serde_json stops at 128 levels) and huge ones (the 1 MiB limit).
    for depth in [129, 1_000, 10_000, 100_000] {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        for path in [COMPAT, NATIVE, BATCH] {
            cases.push(Case::bytes(
                format!("{path} nested arrays {depth}"),
                path,
                format!("{{\"data\": {arrays}}}").into_bytes(),
                400,
            ));
            cases.push(Case::bytes(
                format!("{path} nested objects {depth}"),
                path,
                objects.clone().into_bytes(),
                400,
            ));
        }
    }
    let huge = "x".repeat(1024 * 1024 + 1);
    for (name, path, body) in [
        (
            "compat content",
            COMPAT,
            compat_with(token, "email_content", json!(huge)),
        ),
        ("native text", NATIVE, native_with("text", json!(huge))),
        ("native html", NATIVE, native_with("html", json!(huge))),
        (
            "batch",
            BATCH,
            json!({"messages": [native_with("text", json!(huge))]}),
        ),
    ] {
        cases.push(Case::json(format!("huge {name}"), path, &body, 413));
    }
    cases.push(Case::bytes(
        "huge whitespace",
        NATIVE,
        vec![b' '; 2 * 1024 * 1024],
        413,
    ));

    // --- Wrong types, missing and empty fields, limits: the compat API.
    for name in [
        "email_subject",
        "email_sender",
        "email_timestream",
        "email_content",
    ] {
        let field = format!("data.{name}");
        for (kind, v) in not_strings() {
            cases.push(
                Case::json(
                    format!("compat {name} {kind}"),
                    COMPAT,
                    &compat_with(token, name, v),
                    400,
                )
                .field(&field),
            );
        }
        let mut missing = compat_body(token);
        missing["data"]
            .as_object_mut()
            .expect("an object")
            .remove(name);
        cases.push(
            Case::json(format!("compat {name} missing"), COMPAT, &missing, 400).field(&field),
        );
        for (kind, v) in [("null", json!(null)), ("empty", json!(""))] {
            cases.push(
                Case::json(
                    format!("compat {name} {kind}"),
                    COMPAT,
                    &compat_with(token, name, v),
                    400,
                )
                .field(&field),
            );
        }
    }
    for (kind, v) in [
        ("string", json!("x")),
        ("array", json!([])),
        ("number", json!(1)),
        ("null", json!(null)),
    ] {
        let mut b = compat_body(token);
        b["data"] = v;
        cases.push(Case::json(format!("compat data {kind}"), COMPAT, &b, 400).field("data"));
    }
    for (name, value) in [
        ("subject 990 chars", ("email_subject", "s".repeat(990))),
        ("subject blank", ("email_subject", "   ".into())),
        ("sender 257 chars", ("email_sender", "n".repeat(257))),
        ("sender blank", ("email_sender", " \t ".into())),
    ] {
        cases.push(
            Case::json(
                format!("compat {name}"),
                COMPAT,
                &compat_with(token, value.0, json!(value.1)),
                400,
            )
            .field(format!("data.{}", value.0)),
        );
    }
    for ts in [
        "abc",
        "-1",
        "1e10",
        "0x10",
        "99999999999999999999",
        "253402300800",
        "2023-13-01T00:00:00Z",
        "2023-02-30T00:00:00Z",
        "2023-11-14 22:13:20",
        "Tue, 14 Nov 2023 22:13:20 +0000",
        "1969-12-31T23:59:59Z",
        "  ",
        "17000000OO",
    ] {
        cases.push(
            Case::json(
                format!("compat timestamp {ts:?}"),
                COMPAT,
                &compat_with(token, "email_timestream", json!(ts)),
                400,
            )
            .field("data.email_timestream"),
        );
    }
    for (kind, good) in [
        ("email_subject", "Welcome aboard"),
        ("email_sender", "John Doe"),
    ] {
        for (inj, value) in injections(good) {
            cases.push(
                Case::json(
                    format!("compat {kind} injection {inj}"),
                    COMPAT,
                    &compat_with(token, kind, json!(value)),
                    400,
                )
                .field(format!("data.{kind}")),
            );
        }
    }
    cases.push(
        Case::json(
            "compat content with NUL",
            COMPAT,
            &compat_with(token, "email_content", json!("a\0b")),
            400,
        )
        .field("data.email_content"),
    );

    // --- Wrong types, missing fields and limits: the native API.
    for (name, v) in not_strings() {
        for field in ["from", "subject", "text", "html"] {
            cases.push(
                Case::json(
                    format!("native {field} {name}"),
                    NATIVE,
                    &native_with(field, v.clone()),
                    400,
                )
                .field(field),
            );
        }
        if !v.is_array() {
            for field in ["to", "cc", "bcc", "reply_to", "tags"] {
                if v.is_string() {
                    continue;
                }
                cases.push(
                    Case::json(
                        format!("native {field} {name}"),
                        NATIVE,
                        &native_with(field, v.clone()),
                        400,
                    )
                    .field(field),
                );
            }
        }
        if !v.is_object() {
            cases.push(
                Case::json(
                    format!("native headers {name}"),
                    NATIVE,
                    &native_with("headers", v.clone()),
                    400,
                )
                .field("headers"),
            );
        }
        if !v.is_array() {
            for field in ["to", "cc", "bcc", "reply_to", "tags"] {
                cases.push(
                    Case::json(
                        format!("native {field}[0] {name}"),
                        NATIVE,
                        &native_with(field, json!([v.clone()])),
                        400,
                    )
                    .field(format!("{field}[0]")),
                );
            }
            cases.push(
                Case::json(
                    format!("native header value {name}"),
                    NATIVE,
                    &native_with("headers", json!({"X-Campaign": v.clone()})),
                    400,
                )
                .field("headers"),
            );
        }
    }
    let mut no_to = native_body("a@example.com");
    no_to["to"] = json!([]);
    cases.push(Case::json("native no recipient", NATIVE, &no_to, 400).field("to"));
    let mut no_body = native_body("a@example.com");
    no_body.as_object_mut().expect("object").remove("text");
    cases.push(Case::json("native no text or html", NATIVE, &no_body, 400).field("text"));
    let mut no_subject = native_body("a@example.com");
    no_subject
        .as_object_mut()
        .expect("object")
        .remove("subject");
    cases.push(Case::json("native no subject", NATIVE, &no_subject, 400).field("subject"));
    cases.push(
        Case::json(
            "native unknown field",
            NATIVE,
            &native_with("bcc_everyone", json!(true)),
            400,
        )
        .field("bcc_everyone"),
    );
    let many: Vec<String> = (0..51).map(|i| format!("r{i}@example.com")).collect();
    cases.push(
        Case::json(
            "native 51 recipients",
            NATIVE,
            &native_with("to", json!(many)),
            400,
        )
        .field("to"),
    );
    let headers: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    cases.push(
        Case::json(
            "native 51 headers",
            NATIVE,
            &native_with("headers", Value::Object(headers)),
            400,
        )
        .field("headers"),
    );
    let tags: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
    cases.push(
        Case::json(
            "native 11 tags",
            NATIVE,
            &native_with("tags", json!(tags)),
            400,
        )
        .field("tags"),
    );
    cases.push(
        Case::json(
            "native tag too long",
            NATIVE,
            &native_with("tags", json!(["t".repeat(65)])),
            400,
        )
        .field("tags"),
    );
    cases.push(
        Case::json(
            "native subject 990 chars",
            NATIVE,
            &native_with("subject", json!("s".repeat(990))),
            400,
        )
        .field("subject"),
    );
    cases.push(
        Case::json(
            "native header value longer than its line",
            NATIVE,
            &native_with(
                "headers",
                json!({"X-Campaign": "v".repeat(998 - "X-Campaign: ".len() + 1)}),
            ),
            400,
        )
        .field("headers.X-Campaign"),
    );
    for (name, addr) in [
        ("no at", "not-an-address"),
        ("no local part", "@example.com"),
        ("no domain", "a@"),
        ("two ats", "a@@example.com"),
        ("empty angle", "<>"),
        ("space", "a b@example.com"),
        ("unclosed angle", "Name <a@example.com"),
        ("only name", "Name"),
        ("empty", ""),
        ("too long", &format!("{}@example.com", "a".repeat(600))),
        ("comma list", "a@example.com, b@example.com"),
        ("semicolon list", "a@example.com; b@example.com"),
    ] {
        cases.push(
            Case::json(
                format!("native from {name}"),
                NATIVE,
                &native_with("from", json!(addr)),
                400,
            )
            .field("from"),
        );
        for field in ["to", "cc", "bcc", "reply_to"] {
            cases.push(
                Case::json(
                    format!("native {field} {name}"),
                    NATIVE,
                    &native_with(field, json!([addr])),
                    400,
                )
                .field(format!("{field}[0]")),
            );
        }
    }
    // Header injection in every header-bound native field.
    for (inj, value) in injections("Shop <shop@example.com>") {
        cases.push(
            Case::json(
                format!("native from injection {inj}"),
                NATIVE,
                &native_with("from", json!(value)),
                400,
            )
            .field("from"),
        );
        for field in ["to", "cc", "bcc", "reply_to"] {
            cases.push(
                Case::json(
                    format!("native {field} injection {inj}"),
                    NATIVE,
                    &native_with(field, json!([value])),
                    400,
                )
                .field(format!("{field}[0]")),
            );
        }
    }
    for (inj, value) in injections("Your receipt") {
        cases.push(
            Case::json(
                format!("native subject injection {inj}"),
                NATIVE,
                &native_with("subject", json!(value)),
                400,
            )
            .field("subject"),
        );
        cases.push(
            Case::json(
                format!("native header value injection {inj}"),
                NATIVE,
                &native_with("headers", json!({"X-Campaign": value})),
                400,
            )
            .field("headers"),
        );
        cases.push(
            Case::json(
                format!("native tag injection {inj}"),
                NATIVE,
                &native_with("tags", json!([value])),
                400,
            )
            .field("tags"),
        );
    }
    for name in [
        "X-Bad\r\nBcc",
        "X-Bad\nBcc",
        "X Space",
        "X-Colon:",
        "",
        "X-Ünicode",
        "X-\u{7f}",
        &"X".repeat(77),
    ] {
        cases.push(
            Case::json(
                format!("native header name {name:?}"),
                NATIVE,
                &native_with("headers", json!({ name: "v" })),
                400,
            )
            .field("headers"),
        );
    }
    for reserved in [
        "From",
        "to",
        "CC",
        "Bcc",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Sender",
        "Return-Path",
        "Received",
    ] {
        cases.push(
            Case::json(
                format!("native reserved header {reserved}"),
                NATIVE,
                &native_with("headers", json!({ reserved: "x" })),
                400,
            )
            .field("headers"),
        );
    }
    for (name, text) in [("text", "a\0b"), ("html", "<p>\0</p>")] {
        cases.push(
            Case::json(
                format!("native {name} with NUL"),
                NATIVE,
                &native_with(name, json!(text)),
                400,
            )
            .field(name),
        );
    }

    // --- Batches: not an array, empty, too many, and every entry bad.
    for (name, v, field) in [
        ("messages missing", json!({}), "messages"),
        ("messages null", json!({"messages": null}), "messages"),
        ("messages object", json!({"messages": {}}), "messages"),
        ("messages string", json!({"messages": "x"}), "messages"),
        ("messages empty", json!({"messages": []}), "messages"),
    ] {
        cases.push(Case::json(format!("batch {name}"), BATCH, &v, 400).field(field));
    }
    for n in [101, 150, 500, 1000] {
        let entries: Vec<Value> = (0..n).map(|_| native_body("a@example.com")).collect();
        cases.push(
            Case::json(
                format!("batch of {n}"),
                BATCH,
                &json!({ "messages": entries }),
                400,
            )
            .field("messages"),
        );
    }
    for (name, entry) in [
        ("number", json!(1)),
        ("string", json!("x")),
        ("empty object", json!({})),
        (
            "injection",
            native_with("subject", json!("a\r\nBcc: x@evil.example")),
        ),
        ("bad address", native_with("to", json!(["nope"]))),
    ] {
        cases.push(
            Case::json(
                format!("batch every entry {name}"),
                BATCH,
                &json!({ "messages": [entry.clone(), entry] }),
                400,
            )
            .field("messages[0]"),
        );
    }

    // --- Content types: every endpoint wants JSON.
    for path in [COMPAT, NATIVE, BATCH] {
        let body = if path == COMPAT {
            good_compat.clone()
        } else {
            good_native.clone()
        };
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/xml"),
            Some("application/jsonx"),
            Some("json"),
            Some("text/json"),
            Some("application/octet-stream"),
            Some(""),
        ] {
            let mut c = Case::bytes(
                format!("{path} content type {ct:?}"),
                path,
                body.clone(),
                415,
            );
            c.content_type = ct.map(String::from);
            cases.push(c);
        }
    }

    // --- Tokens: the compat API's in the body, the others' in Authorization.
    for (name, t) in [
        ("missing", None),
        ("null", Some(json!(null))),
        ("empty", Some(json!(""))),
        ("wrong", Some(json!("not-the-token"))),
        ("prefix", Some(json!(&token[..token.len() - 1]))),
        ("longer", Some(json!(format!("{token}x")))),
        ("upper case", Some(json!(token.to_uppercase()))),
        ("padded", Some(json!(format!(" {token} ")))),
        ("huge", Some(json!("t".repeat(100_000)))),
        ("with NUL", Some(json!(format!("{token}\0")))),
    ] {
        let mut b = compat_body(token);
        match t {
            None => {
                b.as_object_mut().expect("object").remove("token");
            }
            Some(v) => b["token"] = v,
        }
        cases.push(Case::json(format!("compat token {name}"), COMPAT, &b, 401));
    }
    for (name, v) in [
        ("number", json!(1)),
        ("array", json!([])),
        ("object", json!({})),
    ] {
        let mut b = compat_body(token);
        b["token"] = v;
        cases.push(Case::json(format!("compat token {name}"), COMPAT, &b, 400).field("token"));
    }
    let mut bad_everything = compat_body("wrong-token");
    bad_everything["data"]["email_subject"] = json!("a\r\nBcc: x@evil.example");
    cases.push(Case::json(
        "compat wrong token and bad field: 401 first",
        COMPAT,
        &bad_everything,
        401,
    ));
    for path in [NATIVE, BATCH] {
        let body = if path == NATIVE {
            native_body("a@example.com")
        } else {
            json!({"messages": [native_body("a@example.com")]})
        };
        for (name, header) in [
            ("missing", None),
            ("empty", Some(b"".to_vec())),
            ("scheme only", Some(b"Bearer".to_vec())),
            ("scheme and space", Some(b"Bearer ".to_vec())),
            ("wrong", Some(b"Bearer not-the-token".to_vec())),
            ("basic", Some(format!("Basic {token}").into_bytes())),
            ("no scheme", Some(token.as_bytes().to_vec())),
            (
                "prefix",
                Some(format!("Bearer {}", &token[..token.len() - 1]).into_bytes()),
            ),
            (
                "upper case",
                Some(format!("Bearer {}", token.to_uppercase()).into_bytes()),
            ),
            ("obs-text", Some(b"Bearer \xff\xfe".to_vec())),
            (
                "huge",
                Some(format!("Bearer {}", "t".repeat(8000)).into_bytes()),
            ),
        ] {
            let mut c = Case::json(format!("{path} authorization {name}"), path, &body, 401);
            c.auth = Auth::Header(header);
            cases.push(c);
        }
    }

    // --- Idempotency keys that cannot be keys.
    for (name, key) in [
        ("empty", b"".to_vec()),
        ("too long", vec![b'k'; 256]),
        ("obs-text", b"key-\xff".to_vec()),
        ("tab", b"key\twith-tab".to_vec()),
    ] {
        let mut c = Case::json(
            format!("idempotency key {name}"),
            NATIVE,
            &native_body("a@example.com"),
            400,
        )
        .field("Idempotency-Key");
        c.extra_header = Some(("idempotency-key", key));
        cases.push(c);
    }
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
        let batch_field = if v["results"].is_array() {
            format!("messages[0].{field}")
        } else {
            field.to_string()
        };
        let named = [field, batch_field.as_str()]
            .iter()
            .any(|f| f.starts_with(want.as_str()) || want.starts_with(*f) && !f.is_empty());
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
