//! Bodies that are not a usable request whatever their fields: broken JSON, JSON that is not an
//! object, invalid UTF-8, deep nesting, bodies over the limit, wrong content types, and batches
//! that are not a list of 1 to 100 messages.

use serde_json::{Value, json};

use super::{BATCH, COMPAT, Case, NATIVE, compat_with, native_with};
use crate::helpers::{compat_body, native_body};

pub fn cases(token: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let good_compat = serde_json::to_vec(&compat_body(token)).expect("JSON");
    let good_native = serde_json::to_vec(&native_body("someone@example.com")).expect("JSON");

    // Every prefix of a valid body (a prefix of an object is never valid), then classic mistakes.
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
        // A key given twice: which one counts is anyone's guess (RFC 8259).
        "{\"data\": {}, \"data\": {}}",
        "{\"data\": {\"email_subject\": \"x\", \"email_subject\": \"y\"}}",
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
        for (api, path) in [("compat", COMPAT), ("native", NATIVE), ("batch", BATCH)] {
            cases.push(Case::json(format!("{api} body {name}"), path, &v, 400).field("body"));
        }
    }

    // Good bodies but for one key given twice, with the same value or another: refused, where
    // a parser that keeps the last would accept the first and send to the second's address.
    let token_again = format!("\"token\": \"{token}\", ");
    for (path, good, again) in [
        (COMPAT, &good_compat, token_again.as_str()),
        (NATIVE, &good_native, "\"to\": \"other@example.com\", "),
        (NATIVE, &good_native, "\"subject\": \"Your receipt\", "),
    ] {
        let text = String::from_utf8(good.clone()).expect("UTF-8");
        let body = text.replacen('{', &format!("{{{again}"), 1);
        cases.push(Case::bytes(
            format!("{path} good body with {again}given twice"),
            path,
            body.into_bytes(),
            400,
        ));
    }

    // Invalid UTF-8 inside a string value, and in a key.
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
    let compat_tail = format!(
        "\", \"email_sender\": \"S\", \"email_timestream\": \"1700000000\", \"email_content\": \"c\"}}, \"token\": \"{token}\"}}"
    );
    for (name, bad) in utf8 {
        for (case, path, head, tail) in [
            (
                "compat invalid UTF-8",
                COMPAT,
                &b"{\"data\": {\"email_subject\": \"Hi "[..],
                compat_tail.as_bytes(),
            ),
            (
                "native invalid UTF-8",
                NATIVE,
                b"{\"from\": \"a@example.com\", \"to\": [\"b@example.com\"], \"subject\": \"s\", \"text\": \"",
                b"\"}",
            ),
            ("batch invalid UTF-8 key", BATCH, b"{\"", b"\": 1}"),
        ] {
            let body = [head, bad, tail].concat();
            cases.push(Case::bytes(format!("{case} {name}"), path, body, 400));
        }
    }

    // Deeply nested bodies (serde_json stops at 128 levels) and huge ones (the 1 MiB limit).
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

    // Batches: not an array, empty, too many, and every entry bad.
    for (name, v) in [
        ("messages missing", json!({})),
        ("messages null", json!({"messages": null})),
        ("messages object", json!({"messages": {}})),
        ("messages string", json!({"messages": "x"})),
        ("messages empty", json!({"messages": []})),
    ] {
        cases.push(Case::json(format!("batch {name}"), BATCH, &v, 400).field("messages"));
    }
    // A field beside `messages` is not dropped without a word: it is refused by its name.
    for (name, v) in [
        (
            "template",
            json!({"messages": [native_body("a@example.com")], "template": "welcome"}),
        ),
        (
            "send_at",
            json!({"messages": [native_body("a@example.com")], "send_at": "1700000000"}),
        ),
    ] {
        cases.push(
            Case::json(format!("batch with {name} beside messages"), BATCH, &v, 400).field(name),
        );
    }
    for n in [101, 150, 500, 1000] {
        let entries: Vec<Value> = (0..n).map(|_| native_body("a@example.com")).collect();
        let body = json!({ "messages": entries });
        cases.push(Case::json(format!("batch of {n}"), BATCH, &body, 400).field("messages"));
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
        let body = json!({ "messages": [entry.clone(), entry] });
        cases.push(
            Case::json(format!("batch every entry {name}"), BATCH, &body, 400).field("messages[0]"),
        );
    }

    // Content types: every endpoint wants JSON.
    for (path, body) in [
        (COMPAT, &good_compat),
        (NATIVE, &good_native),
        (BATCH, &good_native),
    ] {
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
    cases
}
