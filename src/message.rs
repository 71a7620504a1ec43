//! The messages mailroom accepts, their validation, and their lifecycle status.
//!
//! Two shapes come in: the compatibility payload of `POST /api/email` ([`CompatEmail`]) and the
//! native payload of `POST /v1/messages` ([`NativeEmail`]). Both are validated here, once, so that
//! nothing that reaches the queue can fail to build into a MIME message for a reason the client
//! could have been told about.

use std::collections::BTreeMap;
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
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Queued,
        Status::Deferred,
        Status::Delivered,
        Status::Archived,
        Status::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Deferred => "deferred",
            Status::Delivered => "delivered",
            Status::Archived => "archived",
            Status::Dead => "dead",
        }
    }

    /// True once the message needs no more delivery attempts.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Delivered | Status::Archived)
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
                    "expected one of queued, deferred, delivered, archived, dead",
                )
            })
    }
}

/// The `data` object of `POST /api/email`, as the reference API service defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CompatEmail {
    pub email_subject: String,
    /// A display name ("John doe"), not an address.
    pub email_sender: String,
    /// Unix epoch seconds as a string, or RFC 3339; kept as the client sent it.
    pub email_timestream: String,
    pub email_content: String,
}

/// The body of `POST /v1/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NativeEmail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// An address (`a@example.com` or `Name <a@example.com>`) or an array of them; to, cc and
    /// bcc together hold 1 to 50.
    #[serde(default, deserialize_with = "one_or_many")]
    pub to: Vec<String>,
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cc: Vec<String>,
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub bcc: Vec<String>,
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub reply_to: Vec<String>,
    /// Required: 1 to 989 characters, no line breaks.
    // Defaults to empty so that a missing subject is reported by name, like an empty one.
    #[serde(default)]
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Files sent with the message (up to 20); their decoded sizes count against the request
    /// body limit as base64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// A file attached to a native message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// The name the recipient sees: 1 to 255 characters, no line breaks or control characters.
    pub filename: String,
    /// A MIME type such as `application/pdf`; `application/octet-stream` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The file's bytes in base64 (RFC 4648, padded; line breaks are ignored).
    pub content: String,
}

impl Attachment {
    /// The file's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        use base64::Engine;
        let engine = base64::engine::general_purpose::STANDARD;
        if self.content.contains(['\r', '\n', ' ', '\t']) {
            let compact: String = self
                .content
                .chars()
                .filter(|c| !matches!(c, '\r' | '\n' | ' ' | '\t'))
                .collect();
            engine.decode(compact)
        } else {
            engine.decode(&self.content)
        }
    }

    /// The validated content type (the default when none was given).
    pub fn mime_type(&self) -> Result<lettre::message::header::ContentType, String> {
        let given = self
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream");
        lettre::message::header::ContentType::parse(given).map_err(|e| e.to_string())
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(
        untagged,
        expecting = "an address string or an array of address strings"
    )]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
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

/// Parses epoch seconds ("1700000000") or RFC 3339.
pub fn parse_timestream(value: &str) -> Option<DateTime<Utc>> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = v.parse().ok()?;
        // Up to the year 9999: beyond that the archive's YYYY key would break.
        if secs > 253_402_300_799 {
            return None;
        }
        return Utc.timestamp_opt(secs, 0).single();
    }
    DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|d| d.with_timezone(&Utc))
        .filter(|d| d.timestamp() >= 0 && d.year() <= 9999)
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
    value.parse::<Mailbox>().map_err(|e| {
        FieldError::new(
            field,
            format!("is not a valid email address ({e}); expected address or Name <address>"),
        )
    })
}

impl CompatEmail {
    /// Parses the body of `POST /api/email`: `{"data": {...}, "token": "..."}`. Returns the token
    /// (if any) separately so authentication can run before field validation.
    pub fn parse(
        body: &serde_json::Value,
    ) -> Result<(Option<String>, CompatFields<'_>), FieldError> {
        let obj = body
            .as_object()
            .ok_or_else(|| FieldError::new("body", "must be a JSON object"))?;
        let token = match obj.get("token") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(t)) => Some(t.clone()),
            Some(_) => return Err(FieldError::new("token", "must be a string")),
        };
        Ok((token, CompatFields(obj.get("data"))))
    }
}

/// The not yet validated `data` member of a compat body.
pub struct CompatFields<'a>(Option<&'a serde_json::Value>);

impl CompatFields<'_> {
    pub fn validate(self) -> Result<CompatEmail, FieldError> {
        let data = match self.0 {
            None | Some(serde_json::Value::Null) => {
                return Err(FieldError::new("data", "is required"));
            }
            Some(serde_json::Value::Object(m)) => m,
            Some(_) => return Err(FieldError::new("data", "must be an object")),
        };
        let field = |name: &str| -> Result<String, FieldError> {
            let path = format!("data.{name}");
            match data.get(name) {
                None | Some(serde_json::Value::Null) => Err(FieldError::new(path, "is required")),
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(FieldError::new(path, "must be a string")),
            }
        };
        let email = CompatEmail {
            email_subject: field("email_subject")?,
            email_sender: field("email_sender")?,
            email_timestream: field("email_timestream")?,
            email_content: field("email_content")?,
        };
        required_text(
            "data.email_subject",
            &email.email_subject,
            MAX_SUBJECT_CHARS,
        )?;
        required_text("data.email_sender", &email.email_sender, MAX_NAME_CHARS)?;
        if email.email_timestream.trim().is_empty() {
            return Err(FieldError::new(
                "data.email_timestream",
                "must not be empty",
            ));
        }
        if parse_timestream(&email.email_timestream).is_none() {
            return Err(FieldError::new(
                "data.email_timestream",
                "must be Unix epoch seconds as a string (e.g. \"1700000000\") or RFC 3339",
            ));
        }
        if email.email_content.is_empty() {
            return Err(FieldError::new("data.email_content", "must not be empty"));
        }
        if email.email_content.contains('\0') {
            return Err(FieldError::new(
                "data.email_content",
                "must not contain NUL",
            ));
        }
        Ok(email)
    }
}

/// Header names a client may not set: mailroom writes them itself.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "sender",
    "return-path",
    "received",
];

impl NativeEmail {
    /// Parses and validates a native message. `prefix` names the field path for batch entries
    /// (`messages[3].`).
    pub fn parse(
        value: serde_json::Value,
        prefix: &str,
        default_from: Option<&Mailbox>,
    ) -> Result<NativeEmail, FieldError> {
        if !value.is_object() {
            let field = prefix.strip_suffix('.').unwrap_or("body");
            return Err(FieldError::new(field, "must be a JSON object"));
        }
        let email: NativeEmail = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "body".to_string()
            } else {
                format!("{prefix}{path}")
            };
            FieldError::new(field, e.inner().to_string())
        })?;
        email.validate(prefix, default_from)?;
        Ok(email)
    }

    fn validate(&self, prefix: &str, default_from: Option<&Mailbox>) -> Result<(), FieldError> {
        let f = |name: &str| format!("{prefix}{name}");
        match &self.from {
            Some(from) => {
                mailbox(&f("from"), from)?;
            }
            None if default_from.is_none() => {
                return Err(FieldError::new(
                    f("from"),
                    "is required (no DEFAULT_FROM is configured)",
                ));
            }
            None => {}
        }
        let total = self.to.len() + self.cc.len() + self.bcc.len();
        if total == 0 {
            return Err(FieldError::new(f("to"), "needs at least one recipient"));
        }
        if total > MAX_RECIPIENTS {
            return Err(FieldError::new(
                f("to"),
                format!("{total} recipients in to, cc and bcc; the limit is {MAX_RECIPIENTS}"),
            ));
        }
        for (name, list) in [
            ("to", &self.to),
            ("cc", &self.cc),
            ("bcc", &self.bcc),
            ("reply_to", &self.reply_to),
        ] {
            for (i, addr) in list.iter().enumerate() {
                mailbox(&f(&format!("{name}[{i}]")), addr)?;
            }
        }
        if self.reply_to.len() > MAX_RECIPIENTS {
            return Err(FieldError::new(
                f("reply_to"),
                format!("the limit is {MAX_RECIPIENTS}"),
            ));
        }
        required_text(&f("subject"), &self.subject, MAX_SUBJECT_CHARS)?;
        match (&self.text, &self.html) {
            (None, None) => {
                return Err(FieldError::new(f("text"), "text or html is required"));
            }
            (Some(t), _) if t.contains('\0') => {
                return Err(FieldError::new(f("text"), "must not contain NUL"));
            }
            (_, Some(h)) if h.contains('\0') => {
                return Err(FieldError::new(f("html"), "must not contain NUL"));
            }
            _ => {}
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(FieldError::new(
                f("headers"),
                format!("{} headers; the limit is {MAX_HEADERS}", self.headers.len()),
            ));
        }
        for (name, value) in &self.headers {
            let field = f(&format!("headers.{name}"));
            let valid_name = !name.is_empty()
                && name.len() <= 76
                && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
            if !valid_name {
                return Err(FieldError::new(
                    f("headers"),
                    "header names must be 1 to 76 printable ASCII characters without ':' or spaces",
                ));
            }
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(FieldError::new(
                    field,
                    "is set by mailroom and cannot be overridden",
                ));
            }
            header_safe(&field, value)?;
            // The value must fit one header line with its name: it may have nowhere to fold.
            let limit = MAX_HEADER_LINE - name.len() - ": ".len();
            if value.len() > limit {
                return Err(FieldError::new(
                    field,
                    format!(
                        "is {} bytes; the limit for this header is {limit} (one {MAX_HEADER_LINE}-byte line with its name)",
                        value.len()
                    ),
                ));
            }
        }
        if self.tags.len() > MAX_TAGS {
            return Err(FieldError::new(
                f("tags"),
                format!("the limit is {MAX_TAGS} tags"),
            ));
        }
        for (i, tag) in self.tags.iter().enumerate() {
            let ok = !tag.is_empty()
                && tag.chars().count() <= MAX_TAG_CHARS
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
            if !ok {
                return Err(FieldError::new(
                    f(&format!("tags[{i}]")),
                    format!("tags are 1 to {MAX_TAG_CHARS} characters of A-Z a-z 0-9 - _ . :"),
                ));
            }
        }
        if self.attachments.len() > MAX_ATTACHMENTS {
            return Err(FieldError::new(
                f("attachments"),
                format!(
                    "{} attachments; the limit is {MAX_ATTACHMENTS}",
                    self.attachments.len()
                ),
            ));
        }
        for (i, a) in self.attachments.iter().enumerate() {
            let field = |name: &str| f(&format!("attachments[{i}].{name}"));
            required_text(&field("filename"), &a.filename, MAX_FILENAME_CHARS)?;
            if let Some(given) = &a.content_type {
                header_safe(&field("content_type"), given)?;
            }
            a.mime_type().map_err(|e| {
                FieldError::new(
                    field("content_type"),
                    format!("is not a MIME type like application/pdf ({e})"),
                )
            })?;
            a.bytes().map_err(|e| {
                FieldError::new(field("content"), format!("is not valid base64 ({e})"))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    }

    /// CR or LF in a header-bound field is rejected, naming the field.
    #[test]
    fn header_injection_is_rejected() {
        let mut d = good();
        d["email_subject"] = json!("Hi\r\nBcc: victim@example.com");
        assert_eq!(compat(d).unwrap_err().field, "data.email_subject");
        let n = json!({"from": "a@example.com", "to": ["b@example.com\nBcc: c@example.com"],
                       "subject": "s", "text": "t"});
        assert_eq!(NativeEmail::parse(n, "", None).unwrap_err().field, "to[0]");
        let n = json!({"from": "a@example.com", "to": "b@example.com", "subject": "s",
                       "text": "t", "headers": {"X-Campaign": "a\r\nBcc: c@example.com"}});
        assert_eq!(
            NativeEmail::parse(n, "", None).unwrap_err().field,
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
            NativeEmail::parse(n, "messages[2].", None)
                .unwrap_err()
                .field,
            "messages[2].subject"
        );
        let n = json!({"from": "a@example.com", "to": "b@example.com", "subject": "s", "text": "t", "colour": 1});
        let e = NativeEmail::parse(n, "", None).unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
    }

    /// Each attachment's name, type and content are checked, and the error names which one.
    #[test]
    fn attachments_are_validated_by_index() {
        let with = |attachments: serde_json::Value| {
            let n = json!({"from": "a@example.com", "to": "b@example.com", "subject": "s",
                "text": "t", "attachments": attachments});
            NativeEmail::parse(n, "", None)
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
