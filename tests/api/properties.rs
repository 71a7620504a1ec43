//! Property-based tests (proptest) over payload validation and MIME building: whatever a client
//! sends, validation either refuses it with a named field or lets through a message that builds,
//! whose header section is well formed and carries no header the client was not allowed to set.

use std::collections::BTreeSet;

use mailroom::delivery::mime::{self, MimeSettings};
use mailroom::message::{
    CompatEmail, Content, Message, NativeEmail, NativeRules, parse_timestream,
};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Strings with what breaks headers mixed in: line breaks, NUL and other controls, tabs,
/// non-ASCII, Unicode line separators, long runs without spaces.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ -~]{0,40}",
        2 => "[ -~\r\n\t\0\u{0b}\u{1b}\u{7f}\u{85}\u{2028}é€😀]{0,40}",
        1 => "[a-zA-Z0-9]{900,1100}",
        1 => "(\\PC| ){0,60}",
    ]
}

/// Display names: mostly plain (so that most messages get past the address parser and the
/// building is exercised), sometimes nasty.
fn display_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9 .'_éü-]{0,30}",
        1 => nasty(),
    ]
}

fn settings() -> MimeSettings {
    MimeSettings {
        default_from: Some("noreply@example.com".parse().expect("an address")),
        compat_recipient: Some("ops@example.com".parse().expect("an address")),
    }
}

/// Header names the built message may carry for a native message with these custom headers.
fn allowed_headers(custom: &[String]) -> BTreeSet<String> {
    let mut allowed: BTreeSet<String> = [
        "x-mailroom-id",
        "date",
        "message-id",
        "from",
        "to",
        "cc",
        "reply-to",
        "subject",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    allowed.extend(custom.iter().map(|h| h.to_ascii_lowercase()));
    allowed
}

/// Checks the header section of a built message: CRLF line ends only, lines within RFC 5322's
/// 998 characters, and only the allowed header names. Returns the header names seen.
fn check_head(raw: &[u8], allowed: &BTreeSet<String>) -> Result<BTreeSet<String>, String> {
    let text = String::from_utf8(raw.to_vec()).map_err(|_| "the message is not UTF-8")?;
    let (head, _) = text
        .split_once("\r\n\r\n")
        .ok_or("no blank line after the header section")?;
    let mut names = BTreeSet::new();
    for line in head.split("\r\n") {
        if line.contains('\r') || line.contains('\n') {
            return Err(format!("a bare CR or LF in the header line {line:?}"));
        }
        if line.len() > 998 {
            return Err(format!("a header line of {} bytes", line.len()));
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            continue; // a folded continuation
        }
        let (name, _) = line
            .split_once(':')
            .ok_or_else(|| format!("a header line without a name: {line:?}"))?;
        let name = name.to_ascii_lowercase();
        if !allowed.contains(&name) {
            return Err(format!("an unexpected header {name:?} in {head:?}"));
        }
        names.insert(name);
    }
    Ok(names)
}

/// Checks a whole built message, bodies included, for line ends other than CRLF: a lone CR in a
/// 7bit body reaches the relay as it is (SMTP smuggling with `\r.\r\n`).
fn check_line_ends(raw: &[u8]) -> Result<(), String> {
    for (i, pair) in raw.windows(2).enumerate() {
        if (pair[0] == b'\r') != (pair[1] == b'\n') && (pair[0] == b'\r' || pair[1] == b'\n') {
            let around =
                String::from_utf8_lossy(&raw[i.saturating_sub(20)..(i + 20).min(raw.len())]);
            return Err(format!(
                "a line end other than CRLF at byte {i}: {around:?}"
            ));
        }
    }
    match (raw.first(), raw.last()) {
        (Some(b'\n'), _) | (_, Some(b'\r')) => Err("a lone CR or LF at an end".into()),
        _ => Ok(()),
    }
}

fn has_line_break(s: &str) -> bool {
    s.contains('\r') || s.contains('\n')
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// A native message with nasty values in every header-bound field is either refused (and
    /// always when a line break is in one of them) or builds into a clean header section.
    #[test]
    fn native_messages_validate_or_build_clean_headers(
        name in display_name(),
        local in "[a-z0-9.+_-]{1,20}",
        subject in nasty(),
        to_name in display_name(),
        header_name in "[!-9;-~]{1,20}",
        header_value in nasty(),
        text in prop_oneof![3 => "\\PC{0,80}", 1 => nasty()],
        bcc in proptest::bool::ANY,
        more_to in 0usize..49,
        attachment in proptest::option::of(nasty()),
    ) {
        let from = format!("{name} <{local}@example.com>");
        let to = format!("{to_name} <to@example.com>");
        // Up to the limit of recipients: an address list must still fold into lines of 998.
        let mut recipients = vec![to.clone()];
        recipients.extend((0..more_to).map(|i| format!("recipient-number-{i:03}-{local}@example.com")));
        let mut body = json!({
            "from": from,
            "to": recipients,
            "subject": subject,
            "text": text,
            "headers": { header_name.clone(): header_value },
        });
        if bcc {
            body["bcc"] = json!(["hidden@example.com"]);
        }
        if let Some(file) = &attachment {
            use base64::Engine;
            let content = base64::engine::general_purpose::STANDARD.encode(file.as_bytes());
            body["attachments"] = json!([{"filename": "notes.txt", "content_type": "text/plain", "content": content}]);
        }
        let injected = [&from, &to, &subject, &header_value]
            .iter()
            .any(|v| has_line_break(v));
        match NativeEmail::parse(
            body,
            "",
            NativeRules {
                default_from: None,
                templates: &Default::default(),
            },
        ) {
            Err(e) => {
                prop_assert!(!e.field.is_empty() && !e.message.is_empty());
            }
            Ok(email) => {
                prop_assert!(!injected, "a line break got through validation");
                let message = Message::new(Content::Native(Box::new(email)));
                let built = mime::build(&message, &settings())
                    .map_err(|e| TestCaseError::fail(format!("validated but did not build: {e}")))?
                    .expect("it has a recipient");
                let raw = built.formatted();
                let names = check_head(&raw, &allowed_headers(std::slice::from_ref(&header_name)))
                    .map_err(TestCaseError::fail)?;
                check_line_ends(&raw).map_err(TestCaseError::fail)?;
                prop_assert_eq!(built.envelope().to().len(), 1 + more_to + usize::from(bcc));
                prop_assert!(!names.contains("bcc"), "Bcc is envelope only");
                prop_assert!(names.contains(&header_name.to_ascii_lowercase()));
            }
        }
    }

    /// Any JSON at all as the compat `data`: validation never panics; what passes builds into a
    /// clean message whose archive key follows the documented pattern.
    #[test]
    fn compat_data_of_any_shape(data in any_json(), subject in nasty(), sender in nasty(), ts in any_timestream(), content in nasty()) {
        for candidate in [
            data,
            json!({"email_subject": subject, "email_sender": sender, "email_timestream": ts, "email_content": content}),
        ] {
            let body = json!({"data": candidate, "token": "t"});
            let (_, fields) = CompatEmail::parse(&body).expect("the body is an object");
            let Ok(email) = fields.validate() else { continue };
            prop_assert!(!has_line_break(&email.email_subject) && !has_line_break(&email.email_sender));
            prop_assert!(parse_timestream(&email.email_timestream).is_some());
            let message = Message::new(Content::Compat(email));
            let built = mime::build(&message, &settings())
                .map_err(|e| TestCaseError::fail(format!("validated but did not build: {e}")))?
                .expect("COMPAT_RECIPIENT is set");
            let raw = built.formatted();
            check_head(&raw, &allowed_headers(&[])).map_err(TestCaseError::fail)?;
            check_line_ends(&raw).map_err(TestCaseError::fail)?;
            let key = message.archive_key();
            let t = message.time();
            let want = format!(
                "emails/{}/email-{}-",
                t.format("%Y/%m/%d"),
                t.timestamp()
            );
            prop_assert!(key.starts_with(&want), "{key} does not start with {want}");
            let suffix = format!("-{}.json", message.id);
            prop_assert!(key.ends_with(&suffix), "{key} does not end with {suffix}");
        }
    }

    /// Epoch seconds as a string, for every second from 1970 to 9999, mean that second.
    #[test]
    fn epoch_seconds_round_trip(secs in 0i64..=253_402_300_799) {
        let t = parse_timestream(&secs.to_string()).expect("valid epoch seconds");
        prop_assert_eq!(t.timestamp(), secs);
        let again = parse_timestream(&t.to_rfc3339()).expect("valid RFC 3339");
        prop_assert_eq!(again, t);
    }
}

fn any_timestream() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0i64..=253_402_300_799).prop_map(|s| s.to_string()),
        1 => (0i64..=253_402_300_799).prop_map(|s| {
            chrono::DateTime::from_timestamp(s, 0).expect("in range").to_rfc3339()
        }),
        1 => (-10i64..0).prop_map(|s| s.to_string()),
        1 => "[0-9TZ:+.-]{0,30}",
        1 => nasty(),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        nasty().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("email_subject".to_string()),
                    Just("email_sender".to_string()),
                    Just("email_timestream".to_string()),
                    Just("email_content".to_string()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
