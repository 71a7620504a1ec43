//! The messages mailroom accepts, their validation, and their lifecycle status.
//!
//! Two shapes come in: the compatibility payload of `POST /api/email` ([`CompatEmail`]) and the
//! native payload of `POST /v1/messages` ([`NativeEmail`]). Both are validated here, once, so that
//! nothing that reaches the queue can fail to build into a MIME message for a reason the client
//! could have been told about.
//!
//! Layout: this file holds what both share (the accepted [`Message`], its [`Status`], field
//! errors, limits and the header-safety checks); `compat.rs` and `native.rs` hold each shape and
//! its validation; `template.rs` the named templates a native message can be made from.

mod compat;
mod native;
pub mod strict_json;
mod template;

pub use compat::{CompatEmail, CompatFields};
pub use native::{Attachment, NativeEmail, NativeRules};
pub use template::{LiveTemplates, RenderError, Rendered, Templates};

use std::str::FromStr;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A client-facing validation failure: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// RFC 5322's limit on one header line, name and ": " included.
pub const MAX_HEADER_LINE: usize = 998;
/// Longest subject accepted: what fits one header line after `Subject: ` (a subject with no
/// space cannot be folded, so it must fit whole).
pub const MAX_SUBJECT_CHARS: usize = MAX_HEADER_LINE - "Subject: ".len();
/// Longest display name accepted.
pub const MAX_NAME_CHARS: usize = 256;
/// Most recipients (to + cc + bcc) in one message.
pub const MAX_RECIPIENTS: usize = 50;
/// Most custom headers in one message.
pub const MAX_HEADERS: usize = 50;
pub const MAX_TAGS: usize = 10;
pub const MAX_TAG_CHARS: usize = 64;
pub const MAX_ATTACHMENTS: usize = 20;
pub const MAX_FILENAME_CHARS: usize = 255;
/// Furthest ahead `send_at` may be.
pub const MAX_SCHEDULE_DAYS: i64 = 30;

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted and waiting in the queue.
    Queued,
    /// A temporary failure; waiting for its next attempt.
    Deferred,
    /// Handed to the delivery backend, which accepted it.
    Delivered,
    /// Nothing to send (no recipient, or `DELIVERY=none`): archived only.
    Archived,
    /// Failed permanently or ran out of attempts; can be redriven.
    Dead,
    /// Stored, then refused by the queue: the client was answered 503 and may have sent it again,
    /// so it is neither delivered nor a dead letter (a redrive would send it twice).
    Abandoned,
    /// Withdrawn by its sender before it was sent (`POST /v1/messages/{id}/cancel`).
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Queued,
        Status::Deferred,
        Status::Delivered,
        Status::Archived,
        Status::Dead,
        Status::Abandoned,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Deferred => "deferred",
            Status::Delivered => "delivered",
            Status::Archived => "archived",
            Status::Dead => "dead",
            Status::Abandoned => "abandoned",
            Status::Cancelled => "cancelled",
        }
    }

    /// True once the message needs no more delivery attempts.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Delivered | Status::Archived)
    }

    /// True while the message may still be sent: what a worker claims (claim.sql).
    pub fn may_be_sent(self) -> bool {
        matches!(self, Status::Queued | Status::Deferred)
    }
}

impl FromStr for Status {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                FieldError::new(
                    "status",
                    "expected one of queued, deferred, delivered, archived, dead, abandoned, cancelled",
                )
            })
    }
}

/// What a message carries, by the API it came through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    Compat(CompatEmail),
    Native(Box<NativeEmail>),
}

/// An accepted message: what the queue carries and the archive keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: Uuid,
    pub accepted_at: DateTime<Utc>,
    #[serde(flatten)]
    pub content: Content,
}

impl Message {
    pub fn new(content: Content) -> Self {
        Self {
            id: Uuid::now_v7(),
            accepted_at: Utc::now(),
            content,
        }
    }

    pub fn api(&self) -> &'static str {
        match self.content {
            Content::Compat(_) => "compat",
            Content::Native(_) => "native",
        }
    }

    /// The message's own time: `email_timestream` for compat messages, acceptance otherwise.
    pub fn time(&self) -> DateTime<Utc> {
        match &self.content {
            Content::Compat(c) => parse_timestream(&c.email_timestream).unwrap_or(self.accepted_at),
            Content::Native(_) => self.accepted_at,
        }
    }

    /// Who sent it: the display name for compat messages, the from address otherwise.
    pub fn sender(&self) -> &str {
        match &self.content {
            Content::Compat(c) => &c.email_sender,
            Content::Native(n) => n.from.as_deref().unwrap_or(""),
        }
    }

    pub fn subject(&self) -> &str {
        match &self.content {
            Content::Compat(c) => &c.email_subject,
            Content::Native(n) => &n.subject,
        }
    }

    /// When the message is due, if it was scheduled after its acceptance (`send_at`).
    pub fn due_later(&self) -> Option<DateTime<Utc>> {
        match &self.content {
            Content::Native(n) => n.send_at.filter(|t| *t > self.accepted_at),
            Content::Compat(_) => None,
        }
    }

    pub fn tags(&self) -> &[String] {
        match &self.content {
            Content::Compat(_) => &[],
            Content::Native(n) => &n.tags,
        }
    }

    /// The archive object key: `emails/YYYY/MM/DD/email-{timestamp}-{sender_hash}-{id}.json`.
    /// Deterministic, so a redelivery rewrites the same object.
    pub fn archive_key(&self) -> String {
        let t = self.time();
        format!(
            "emails/{:04}/{:02}/{:02}/email-{}-{}-{}.json",
            t.year(),
            t.month(),
            t.day(),
            t.timestamp(),
            sender_hash(self.sender()),
            self.id
        )
    }
}

/// A short SHA-256 hex of the sender: 16 hex digits.
pub fn sender_hash(sender: &str) -> String {
    let digest = Sha256::digest(sender.as_bytes());
    hex::encode(&digest[..8])
}

/// The last second of the year 9999: the archive's YYYY key and the `Date` header (httpdate
/// panics past it) end there.
const LAST_SECOND: i64 = 253_402_300_799;

/// Parses epoch seconds ("1700000000") or RFC 3339, from 1970 to the end of the year 9999.
pub fn parse_timestream(value: &str) -> Option<DateTime<Utc>> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = v.parse().ok()?;
        if secs > LAST_SECOND {
            return None;
        }
        return Utc.timestamp_opt(secs, 0).single();
    }
    // A leap second (`23:59:60`) is one second past its minute's last as a system time, so the
    // year's last minute is compared with its leap second in: `9999-12-31T23:59:60Z` is out.
    let last = DateTime::from_timestamp(LAST_SECOND, 999_999_999)?;
    DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|d| d.with_timezone(&Utc))
        .filter(|d| d.timestamp() >= 0 && *d <= last)
}

/// Rejects CR, LF and other control characters in a value bound for an SMTP header.
fn header_safe(field: &str, value: &str) -> Result<(), FieldError> {
    if value.chars().any(|c| c == '\r' || c == '\n') {
        return Err(FieldError::new(
            field,
            "must not contain CR or LF (header injection)",
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn required_text(field: &str, value: &str, max_chars: usize) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    header_safe(field, value)?;
    let n = value.chars().count();
    if n > max_chars {
        return Err(FieldError::new(
            field,
            format!("is {n} characters; the limit is {max_chars}"),
        ));
    }
    Ok(())
}

fn mailbox(field: &str, value: &str) -> Result<Mailbox, FieldError> {
    header_safe(field, value)?;
    if value.chars().count() > MAX_NAME_CHARS + 256 {
        return Err(FieldError::new(field, "is too long for an address"));
    }
    deliverable(value).map_err(|why| FieldError::new(field, why))
}

/// An address as it goes out. lettre takes any Unicode and any atext in a domain, but a relay
/// without SMTPUTF8, and SES, take only ASCII: an internationalised domain goes out in its ASCII
/// form (`bücher.de` as `xn--bcher-kva.de`). A domain that is no host name (`ex$ample.com`) and
/// a local part that is not ASCII (`ü@example.com`, which needs SMTPUTF8) are refused up front,
/// rather than accepted and then retried at every attempt until they are dead-lettered.
pub fn deliverable(value: &str) -> Result<Mailbox, String> {
    let mailbox: Mailbox = value.parse().map_err(|e| {
        format!("is not a valid email address ({e}); expected address or Name <address>")
    })?;
    let (user, domain) = (mailbox.email.user(), mailbox.email.domain());
    if !user.is_ascii() {
        return Err(
            "has a part before the @ that is not ASCII; sending it needs SMTPUTF8, which relays and SES do not all offer"
                .into(),
        );
    }
    if domain.starts_with('[') {
        // An address literal (`[192.0.2.1]`), which lettre has checked.
        return Ok(mailbox);
    }
    // Host-name rules (STD3: letters, digits, hyphens), no hyphen first or last in a label;
    // `--` in the third and fourth place, which RFC 5321 allows (`mx--1.example`), stays.
    let ascii = idna::uts46::Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            idna::AsciiDenyList::STD3,
            idna::uts46::Hyphens::CheckFirstLast,
            idna::uts46::DnsLength::Verify,
        )
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| {
        format!(
            "has a domain that is not a host name ({domain:?}): letters, digits and hyphens between dots, or an internationalised name"
        )
    })?;
    if ascii == domain {
        return Ok(mailbox);
    }
    let email = lettre::Address::new(user, &ascii).map_err(|e| {
        format!("has a domain whose ASCII form {ascii:?} is not valid in an address ({e})")
    })?;
    Ok(Mailbox::new(mailbox.name, email))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Addresses as they go out: an internationalised domain in ASCII, host-name rules for the
    /// rest (a hyphen pair inside a label is allowed, one at either end is not).
    #[test]
    fn deliverable_addresses() {
        let sent = |a: &str| deliverable(a).map(|m| m.email.to_string());
        assert_eq!(sent("u@ab--cd.example").as_deref(), Ok("u@ab--cd.example"));
        assert_eq!(
            sent("u@Bücher.example").as_deref(),
            Ok("u@xn--bcher-kva.example")
        );
        for bad in [
            "u@-ab.example",
            "u@ab-.example",
            "u@ex$ample.com",
            "ü@example.com",
        ] {
            assert!(deliverable(bad).is_err(), "{bad}");
        }
    }

    fn rules(templates: &Templates) -> NativeRules<'_> {
        NativeRules {
            default_from: None,
            templates,
        }
    }
    use serde_json::json;

    fn compat(data: serde_json::Value) -> Result<CompatEmail, FieldError> {
        let body = json!({"data": data, "token": "t"});
        let (_, fields) = CompatEmail::parse(&body)?;
        fields.validate()
    }

    fn good() -> serde_json::Value {
        json!({"email_subject": "Hi", "email_sender": "John doe",
               "email_timestream": "1700000000", "email_content": "Hello"})
    }

    /// Each missing or mistyped compat field is named in the error.
    #[test]
    fn compat_fields_are_named() {
        for name in [
            "email_subject",
            "email_sender",
            "email_timestream",
            "email_content",
        ] {
            let mut d = good();
            d.as_object_mut().expect("object").remove(name);
            assert_eq!(compat(d).unwrap_err().field, format!("data.{name}"));
            let mut d = good();
            d[name] = json!(12);
            let e = compat(d).unwrap_err();
            assert_eq!(e.field, format!("data.{name}"));
            assert!(e.message.contains("string"));
        }
        assert!(compat(good()).is_ok());
    }

    /// Epoch seconds and RFC 3339 are accepted; anything else is a field error.
    #[test]
    fn timestream_formats() {
        assert_eq!(
            parse_timestream("1700000000").map(|t| t.timestamp()),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_timestream("2023-11-14T22:13:20Z").map(|t| t.timestamp()),
            Some(1_700_000_000)
        );
        for bad in ["yesterday", "-5", "1.5", "99999999999999999999", ""] {
            assert!(parse_timestream(bad).is_none(), "{bad}");
        }
        // A leap second is a time, but not the one after the year 9999's last second.
        for good in ["2016-12-31T23:59:60Z", "9999-12-31T23:59:59.999Z"] {
            let t = parse_timestream(good).expect(good);
            // The `Date` header takes it: httpdate panics on a time past the year 9999.
            let _dated = lettre::Message::builder().date(std::time::SystemTime::from(t));
        }
        assert!(parse_timestream("9999-12-31T23:59:60Z").is_none());
    }

    /// CR or LF in a header-bound field is rejected, naming the field.
    #[test]
    fn header_injection_is_rejected() {
        let mut d = good();
        d["email_subject"] = json!("Hi\r\nBcc: victim@example.com");
        assert_eq!(compat(d).unwrap_err().field, "data.email_subject");
        let n = json!({"from": "a@example.com", "to": ["b@example.com\nBcc: c@example.com"],
                       "subject": "s", "text": "t"});
        assert_eq!(
            NativeEmail::parse(n, "", rules(&Templates::default()))
                .unwrap_err()
                .field,
            "to[0]"
        );
        let n = json!({"from": "a@example.com", "to": "b@example.com", "subject": "s",
                       "text": "t", "headers": {"X-Campaign": "a\r\nBcc: c@example.com"}});
        assert_eq!(
            NativeEmail::parse(n, "", rules(&Templates::default()))
                .unwrap_err()
                .field,
            "headers.X-Campaign"
        );
    }

    /// The archive key follows the documented layout and uses the message's own time.
    #[test]
    fn archive_key_layout() {
        let m = Message::new(Content::Compat(compat(good()).expect("valid")));
        let key = m.archive_key();
        assert_eq!(
            key,
            format!(
                "emails/2023/11/14/email-1700000000-{}-{}.json",
                sender_hash("John doe"),
                m.id
            )
        );
        assert_eq!(sender_hash("John doe").len(), 16);
    }

    /// Serde errors in the native API carry the path of the bad field.
    #[test]
    fn native_type_errors_carry_the_path() {
        let n = json!({"from": "a@example.com", "to": "b@example.com", "subject": 5, "text": "t"});
        assert_eq!(
            NativeEmail::parse(n, "messages[2].", rules(&Templates::default()))
                .unwrap_err()
                .field,
            "messages[2].subject"
        );
        let n = json!({"from": "a@example.com", "to": "b@example.com", "subject": "s", "text": "t", "colour": 1});
        let e = NativeEmail::parse(n, "", rules(&Templates::default())).unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
    }

    /// Each attachment's name, type and content are checked, and the error names which one.
    #[test]
    fn attachments_are_validated_by_index() {
        let with = |attachments: serde_json::Value| {
            let n = json!({"from": "a@example.com", "to": "b@example.com", "subject": "s",
                "text": "t", "attachments": attachments});
            NativeEmail::parse(n, "", rules(&Templates::default()))
        };
        let good = json!({"filename": "a.txt", "content": "aGVs\r\nbG8="});
        let email = with(json!([good.clone()])).expect("valid, line breaks in base64 ignored");
        assert_eq!(email.attachments[0].bytes().expect("decodes"), b"hello");
        let cases = [
            (
                json!([good.clone(), {"filename": "", "content": ""}]),
                "attachments[1].filename",
                "empty",
            ),
            (
                json!([{"filename": "a\r\nBcc: x@example.com", "content": ""}]),
                "attachments[0].filename",
                "CR or LF",
            ),
            (
                json!([{"filename": "a.txt", "content": "not base64!"}]),
                "attachments[0].content",
                "base64",
            ),
            (
                json!([{"filename": "a.txt", "content": "", "content_type": "pdf"}]),
                "attachments[0].content_type",
                "MIME type",
            ),
            (
                json!([{"filename": "a.txt", "content": "", "content_type": "text/plain\r\nX: y"}]),
                "attachments[0].content_type",
                "CR or LF",
            ),
            (json!([{"filename": "a.txt"}]), "attachments[0]", "content"),
            (
                json!([{"filename": "a.txt", "content": "", "size": 3}]),
                "attachments[0]",
                "size",
            ),
            (
                json!(vec![good.clone(); MAX_ATTACHMENTS + 1]),
                "attachments",
                "limit is 20",
            ),
            (
                json!([{"filename": "x".repeat(MAX_FILENAME_CHARS + 1), "content": ""}]),
                "attachments[0].filename",
                "limit is 255",
            ),
        ];
        for (attachments, field, says) in cases {
            let e = with(attachments.clone()).expect_err("refused");
            assert!(e.field.starts_with(field), "{attachments}: {e}");
            assert!(e.message.contains(says), "{attachments}: {e}");
        }
    }
}
