//! Field by field: wrong JSON types, missing and empty values, limits, invalid addresses and
//! timestamps, header names, and header injection in every header-bound field of both APIs.

use serde_json::{Value, json};

use super::{COMPAT, Case, NATIVE, compat_field, injections, native_field, not_strings};
use crate::helpers::{compat_body, native_body};

const COMPAT_FIELDS: [&str; 4] = [
    "email_subject",
    "email_sender",
    "email_timestream",
    "email_content",
];
const ADDRESS_LISTS: [&str; 4] = ["to", "cc", "bcc", "reply_to"];

/// Strings that are neither Unix seconds nor RFC 3339 (nor a time up to the year 9999), for
/// `email_timestream` and `send_at`.
const BAD_TIMES: [&str; 14] = [
    "abc",
    "-1",
    "1e10",
    "0x10",
    "99999999999999999999",
    "253402300800",
    "9999-12-31T23:59:60Z",
    "2023-13-01T00:00:00Z",
    "2023-02-30T00:00:00Z",
    "2023-11-14 22:13:20",
    "Tue, 14 Nov 2023 22:13:20 +0000",
    "1969-12-31T23:59:59Z",
    "  ",
    "17000000OO",
];

pub fn compat(token: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for name in COMPAT_FIELDS {
        for (kind, v) in not_strings() {
            cases.push(compat_field(token, &format!("{name} {kind}"), name, v));
        }
        let mut missing = compat_body(token);
        missing["data"]
            .as_object_mut()
            .expect("an object")
            .remove(name);
        cases.push(
            Case::json(format!("compat {name} missing"), COMPAT, &missing, 400)
                .field(format!("data.{name}")),
        );
        for (kind, v) in [("null", json!(null)), ("empty", json!(""))] {
            cases.push(compat_field(token, &format!("{name} {kind}"), name, v));
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
    for (name, field, value) in [
        ("subject 990 chars", "email_subject", "s".repeat(990)),
        ("subject blank", "email_subject", "   ".into()),
        ("sender 257 chars", "email_sender", "n".repeat(257)),
        ("sender blank", "email_sender", " \t ".into()),
        ("content with NUL", "email_content", "a\0b".into()),
        ("content blank", "email_content", " \r\n\t ".into()),
    ] {
        cases.push(compat_field(token, name, field, json!(value)));
    }
    for ts in BAD_TIMES {
        let name = format!("timestamp {ts:?}");
        cases.push(compat_field(token, &name, "email_timestream", json!(ts)));
    }
    for (field, good) in [
        ("email_subject", "Welcome aboard"),
        ("email_sender", "John Doe"),
    ] {
        for (inj, value) in injections(good) {
            let name = format!("{field} injection {inj}");
            cases.push(compat_field(token, &name, field, json!(value)));
        }
    }
    cases
}

pub fn native() -> Vec<Case> {
    let mut cases = Vec::new();
    for ts in BAD_TIMES {
        let name = format!("send_at {ts:?}");
        cases.push(native_field(&name, "send_at", json!(ts), "send_at"));
    }
    for (kind, v) in not_strings() {
        cases.push(native_field(
            &format!("template {kind}"),
            "template",
            v.clone(),
            "template",
        ));
        if !v.is_object() {
            let name = format!("variables {kind}");
            cases.push(native_field(&name, "variables", v.clone(), "variables"));
        }
        // A non-negative integer is Unix seconds: a time.
        if !v.is_u64() {
            let name = format!("send_at {kind}");
            cases.push(native_field(&name, "send_at", v.clone(), "send_at"));
        }
        for field in ["from", "subject", "text", "html"] {
            cases.push(native_field(
                &format!("{field} {kind}"),
                field,
                v.clone(),
                field,
            ));
        }
        if !v.is_array() {
            for field in ADDRESS_LISTS.into_iter().chain(["tags", "attachments"]) {
                cases.push(native_field(
                    &format!("{field} {kind}"),
                    field,
                    v.clone(),
                    field,
                ));
            }
        }
        for field in ["filename", "content", "content_type"] {
            let mut file = json!({"filename": "a.txt", "content": "aGk="});
            file[field] = v.clone();
            cases.push(native_field(
                &format!("attachment {field} {kind}"),
                "attachments",
                json!([file]),
                format!("attachments[0].{field}"),
            ));
        }
        if !v.is_object() {
            cases.push(native_field(
                &format!("headers {kind}"),
                "headers",
                v.clone(),
                "headers",
            ));
        }
        if !v.is_array() {
            for field in ADDRESS_LISTS.into_iter().chain(["tags"]) {
                let name = format!("{field}[0] {kind}");
                // An address list is one string or a list of them, and a value that is neither
                // is refused as the whole list's ("to: an address string or an array of address
                // strings"); a tag is named by its place.
                let named = if field == "tags" {
                    format!("{field}[0]")
                } else {
                    field.to_string()
                };
                cases.push(native_field(&name, field, json!([v.clone()]), named));
            }
            let headers = json!({"X-Campaign": v.clone()});
            cases.push(native_field(
                &format!("header value {kind}"),
                "headers",
                headers,
                "headers",
            ));
        }
    }
    for (name, field) in [
        ("no recipient", "to"),
        ("no text or html", "text"),
        ("no subject", "subject"),
    ] {
        let mut b = native_body("a@example.com");
        if field == "to" {
            b["to"] = json!([]);
        } else {
            b.as_object_mut().expect("object").remove(field);
        }
        cases.push(Case::json(format!("native {name}"), NATIVE, &b, 400).field(field));
    }
    let many: Vec<String> = (0..51).map(|i| format!("r{i}@example.com")).collect();
    let headers: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    let tags: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
    let long_header = "v".repeat(998 - "X-Campaign: ".len() + 1);
    for (name, field, value, blamed) in [
        ("unknown field", "bcc_everyone", json!(true), "bcc_everyone"),
        (
            "unknown attachment field",
            "attachments",
            json!([{"filename": "a.txt", "content": "aGk=", "inline": true}]),
            "attachments[0].inline",
        ),
        ("51 recipients", "to", json!(many), "to"),
        ("51 headers", "headers", Value::Object(headers), "headers"),
        ("11 tags", "tags", json!(tags), "tags"),
        ("tag too long", "tags", json!(["t".repeat(65)]), "tags"),
        (
            "subject 990 chars",
            "subject",
            json!("s".repeat(990)),
            "subject",
        ),
        (
            "header value longer than its line",
            "headers",
            json!({"X-Campaign": long_header}),
            "headers.X-Campaign",
        ),
        ("text with NUL", "text", json!("a\0b"), "text"),
        ("html with NUL", "html", json!("<p>\0</p>"), "html"),
    ] {
        cases.push(native_field(name, field, value, blamed));
    }
    let too_long = format!("{}@example.com", "a".repeat(600));
    for (kind, addr) in [
        ("no at", "not-an-address"),
        ("no local part", "@example.com"),
        ("no domain", "a@"),
        ("two ats", "a@@example.com"),
        ("empty angle", "<>"),
        ("space", "a b@example.com"),
        ("unclosed angle", "Name <a@example.com"),
        ("only name", "Name"),
        ("empty", ""),
        ("too long", &too_long),
        ("comma list", "a@example.com, b@example.com"),
        ("semicolon list", "a@example.com; b@example.com"),
        // lettre takes these; a relay without SMTPUTF8, or SES, would refuse them at every
        // attempt.
        ("non-ASCII local part", "ü@example.com"),
        ("dollar in domain", "a@ex$ample.com"),
        ("slash in domain", "a@foo/bar.com"),
        ("label ending in a hyphen", "a@example-.com"),
    ] {
        cases.extend(bad_address(kind, addr));
    }
    // Header injection in every header-bound native field.
    for (inj, value) in injections("Shop <shop@example.com>") {
        cases.extend(bad_address(&format!("injection {inj}"), &value));
    }
    for (inj, value) in injections("Your receipt") {
        let name = |field: &str| format!("{field} injection {inj}");
        cases.push(native_field(
            &name("subject"),
            "subject",
            json!(value),
            "subject",
        ));
        let headers = json!({"X-Campaign": value});
        cases.push(native_field(
            &name("header value"),
            "headers",
            headers,
            "headers",
        ));
        cases.push(native_field(&name("tag"), "tags", json!([value]), "tags"));
        let file = json!([{"filename": value, "content": "aGk="}]);
        cases.push(native_field(
            &name("attachment filename"),
            "attachments",
            file,
            "attachments[0].filename",
        ));
    }
    let long_type = format!("application/pdf; x={}", "a".repeat(2_000));
    let injected = injections("text/plain")
        .into_iter()
        .map(|(inj, value)| (format!("injection {inj}"), value));
    // A header line over 998 bytes (lettre folds only at spaces), a leaf part that says it is
    // multipart or an enclosed message, a non-ASCII parameter.
    let unfit = [
        ("2,000 bytes", long_type.as_str()),
        ("multipart", "multipart/mixed"),
        ("message", " Message/RFC822"),
        ("non-ASCII", "application/pdf; name=\"é.pdf\""),
    ]
    .map(|(kind, v)| (kind.to_string(), v.to_string()));
    for (kind, value) in injected.chain(unfit) {
        let file = json!([{"filename": "a.txt", "content_type": value, "content": "aGk="}]);
        cases.push(native_field(
            &format!("attachment content_type {kind}"),
            "attachments",
            file,
            "attachments[0].content_type",
        ));
    }
    for header in [
        "X-Bad\r\nBcc",
        "X-Bad\nBcc",
        "X Space",
        "X-Colon:",
        "",
        "X-Ünicode",
        "X-\u{7f}",
        &"X".repeat(77),
    ] {
        let name = format!("header name {header:?}");
        cases.push(native_field(
            &name,
            "headers",
            json!({ header: "v" }),
            format!("headers.{header}"),
        ));
    }
    // One header twice, in two cases: lettre would send only one of them. The map is sorted,
    // so `X-Tag` is met first and `x-tag` is blamed.
    cases.push(native_field(
        "header given twice in two cases",
        "headers",
        json!({"X-Tag": "a", "x-tag": "b"}),
        "headers.x-tag",
    ));
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
        "Content-Disposition",
        "content-id",
        "Content-Description",
        "Sender",
        "Return-Path",
        "Received",
        "X-Mailroom-ID",
    ] {
        let name = format!("reserved header {reserved}");
        cases.push(native_field(
            &name,
            "headers",
            json!({ reserved: "x" }),
            "headers",
        ));
    }
    cases
}

/// `addr` as the from address and as the first of each address list, each refused naming it.
fn bad_address(kind: &str, addr: &str) -> Vec<Case> {
    let mut cases = vec![native_field(
        &format!("from {kind}"),
        "from",
        json!(addr),
        "from",
    )];
    for field in ADDRESS_LISTS {
        let name = format!("{field} {kind}");
        cases.push(native_field(
            &name,
            field,
            json!([addr]),
            format!("{field}[0]"),
        ));
    }
    cases
}
