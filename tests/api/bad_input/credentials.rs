//! Tokens and keys: the compat API's token in the body, `Authorization` on the native API, and
//! `Idempotency-Key`s that cannot be keys.

use serde_json::json;

use super::{Auth, BATCH, COMPAT, Case, NATIVE};
use crate::helpers::{compat_body, native_body};

pub fn cases(token: &str) -> Vec<Case> {
    let mut cases = Vec::new();
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
    for (path, body) in [
        (NATIVE, native_body("a@example.com")),
        (BATCH, json!({"messages": [native_body("a@example.com")]})),
    ] {
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
