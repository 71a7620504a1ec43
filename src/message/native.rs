//! The native payload of `POST /v1/messages` (with its attachments) and its validation.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};

use super::template::{RenderError, Templates};
use super::{
    FieldError, MAX_ATTACHMENTS, MAX_FILENAME_CHARS, MAX_HEADER_LINE, MAX_HEADERS, MAX_RECIPIENTS,
    MAX_SCHEDULE_DAYS, MAX_SUBJECT_CHARS, MAX_TAG_CHARS, MAX_TAGS, header_safe, mailbox,
    required_text,
};

/// The body of `POST /v1/messages`.
///
/// Unknown fields are refused when a request is parsed ([`NativeEmail::parse`]), not when a
/// stored message is read: a message a later release stored, with a field this one does not
/// know, is still delivered after a rollback instead of failing the worker's batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(
    description = "A message: at least one recipient in to, cc or bcc (50 in all), and a subject with text, html or both, or a template with its variables. A field not listed here is refused."
)]
pub struct NativeEmail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// An address (`a@example.com` or `Name <a@example.com>`) or an array of them; to, cc and
    /// bcc together hold 1 to 50.
    #[serde(default, deserialize_with = "one_or_many")]
    #[schema(schema_with = addresses_schema)]
    pub to: Vec<String>,
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schema(schema_with = addresses_schema)]
    pub cc: Vec<String>,
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schema(schema_with = addresses_schema)]
    pub bcc: Vec<String>,
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schema(schema_with = addresses_schema)]
    pub reply_to: Vec<String>,
    /// Required unless `template` is given: 1 to 989 characters, no line breaks.
    // Defaults to empty so that a missing subject is reported by name, like an empty one.
    #[serde(default)]
    #[schema(max_length = 989)]
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Extra header fields by name (at most 50; names case-insensitively unique). Those mailroom
    /// writes itself (From, To, Subject, Message-ID, ...) and the `Content-*` fields of the MIME
    /// body (all but Content-Language) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Labels for the message (up to 10, each 1 to 64 characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 10)]
    pub tags: Vec<String>,
    /// Files sent with the message (up to 20); their decoded sizes count against the request
    /// body limit as base64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 20)]
    pub attachments: Vec<Attachment>,
    /// The name of a template in `TEMPLATES_DIR` that makes the subject, text and html (which
    /// are then not given): rendered with `variables` when the message is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The values the template prints, as a JSON object; every one it uses must be given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub variables: Option<serde_json::Map<String, serde_json::Value>>,
    /// When to send it: RFC 3339 (`2026-12-01T09:00:00Z`) or Unix seconds (a string or a
    /// number), at most 30 days ahead; a time already past sends at once. With SQS or Kafka
    /// the message waits in the store until its time, then goes on the queue.
    #[serde(
        default,
        deserialize_with = "send_at",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = send_at_schema)]
    pub send_at: Option<DateTime<Utc>>,
}

/// A file attached to a native message (unknown fields: as for [`NativeEmail`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(description = "A file sent with the message. A field not listed here is refused.")]
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

/// The OpenAPI form of an address field: one address or an array of them (`one_or_many`).
fn addresses_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    let address = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(3))
    };
    OneOfBuilder::new()
        .item(address())
        .item(ArrayBuilder::new().items(address()).max_items(Some(50)))
        .description(Some(
            "An address (`a@example.com` or `Name <a@example.com>`) or an array of them",
        ))
        .build()
        .into()
}

/// The OpenAPI form of `send_at`: an RFC 3339 time, or Unix seconds as a number or a string.
fn send_at_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9]+$")),
        )
        .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
        .description(Some(
            "When to send it: RFC 3339, or Unix seconds (a number or a string), at most 30 days ahead",
        ))
        .build()
        .into()
}

/// An RFC 3339 time, or Unix seconds as a number or a string (as `email_timestream` takes them).
fn send_at<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(
        untagged,
        expecting = "an RFC 3339 time such as \"2026-12-01T09:00:00Z\" or Unix seconds"
    )]
    enum When {
        Secs(u64),
        Text(String),
    }
    // `null` is no time, as for the other optional fields.
    let parsed = match Option::<When>::deserialize(d)? {
        None => return Ok(None),
        Some(When::Secs(secs)) => super::parse_timestream(&secs.to_string()),
        Some(When::Text(text)) => super::parse_timestream(&text),
    };
    parsed.map(Some).ok_or_else(|| {
        serde::de::Error::custom(
            "is not a time: expected RFC 3339 such as \"2026-12-01T09:00:00Z\" or Unix seconds",
        )
    })
}

/// A field path as the API names fields (`attachments[0].name`), from `serde_ignored`'s
/// (`attachments.0.name`).
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
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

/// Header names a client may not set: mailroom writes them itself.
/// The longest attachment content type: its parameters included, well within one header line.
const MAX_CONTENT_TYPE_BYTES: usize = 255;

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
    // Ties a delivered copy (and its bounces) to the message's record.
    "x-mailroom-id",
];

/// What a native message is checked against besides itself.
#[derive(Clone, Copy)]
pub struct NativeRules<'a> {
    /// The sender of a message that names none (`DEFAULT_FROM`).
    pub default_from: Option<&'a Mailbox>,
    pub templates: &'a Templates,
}

impl NativeEmail {
    /// Parses and validates a native message, rendering its template if it names one. `prefix`
    /// names the field path for batch entries (`messages[3].`).
    pub fn parse(
        value: serde_json::Value,
        prefix: &str,
        rules: NativeRules<'_>,
    ) -> Result<NativeEmail, FieldError> {
        if !value.is_object() {
            let field = prefix.strip_suffix('.').unwrap_or("body");
            return Err(FieldError::new(field, "must be a JSON object"));
        }
        let mut unknown = None;
        let mut note = |path: serde_ignored::Path<'_>| {
            unknown.get_or_insert_with(|| field_path(&path));
        };
        let fields = serde_ignored::Deserializer::new(value, &mut note);
        let parsed = serde_path_to_error::deserialize(fields).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "body".to_string()
            } else {
                format!("{prefix}{path}")
            };
            FieldError::new(field, e.inner().to_string())
        });
        if let Some(path) = unknown {
            return Err(FieldError::new(
                format!("{prefix}{path}"),
                format!("unknown field {path:?}: see /openapi.json for the fields of a message"),
            ));
        }
        let mut email: NativeEmail = parsed?;
        email.apply_template(prefix, rules.templates)?;
        email
            .validate(prefix, rules.default_from)
            .map_err(|e| email.blame_template(prefix, e))?;
        // The message carries its sender from here on: the worker that builds it, maybe another
        // process, maybe days later for a scheduled one, may not have the same DEFAULT_FROM.
        if email.from.is_none() {
            email.from = rules.default_from.map(ToString::to_string);
        }
        Ok(email)
    }

    /// A subject, text or html that a template made and that fails validation is the fault of
    /// the request's variables (or of the template), not of a field the request did not send.
    fn blame_template(&self, prefix: &str, e: FieldError) -> FieldError {
        let Some(name) = &self.template else {
            return e;
        };
        let part = e.field.strip_prefix(prefix).unwrap_or(&e.field);
        if !matches!(part, "subject" | "text" | "html") {
            return e;
        }
        FieldError::new(
            format!("{prefix}variables"),
            format!("template {name:?} makes a {part} that {}", e.message),
        )
    }

    /// Fills subject, text and html from the named template. What it makes is then validated
    /// like what a client writes, an error naming `variables` ([`Self::blame_template`]).
    fn apply_template(&mut self, prefix: &str, templates: &Templates) -> Result<(), FieldError> {
        let f = |name: &str| format!("{prefix}{name}");
        let Some(name) = &self.template else {
            if self.variables.is_some() {
                return Err(FieldError::new(
                    f("variables"),
                    "fill a template: give template too",
                ));
            }
            return Ok(());
        };
        for (field, given) in [
            ("subject", !self.subject.is_empty()),
            ("text", self.text.is_some()),
            ("html", self.html.is_some()),
        ] {
            if given {
                return Err(FieldError::new(
                    f(field),
                    format!("cannot be given with a template: template {name:?} makes it"),
                ));
            }
        }
        let none = serde_json::Map::new();
        let rendered = templates
            .render(name, self.variables.as_ref().unwrap_or(&none))
            .map_err(|e| match e {
                RenderError::Unknown => {
                    let known: Vec<&str> = templates.names().collect();
                    let known = if known.is_empty() {
                        "none is loaded (TEMPLATES_DIR)".to_string()
                    } else {
                        format!("loaded: {}", known.join(", "))
                    };
                    FieldError::new(f("template"), format!("no template {name:?}; {known}"))
                }
                RenderError::Failed(why) => FieldError::new(
                    f("variables"),
                    format!("cannot render template {name:?}: {why}"),
                ),
            })?;
        self.subject = rendered.subject;
        self.text = rendered.text;
        self.html = rendered.html;
        Ok(())
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
        let mut seen = std::collections::HashSet::new();
        for (name, value) in &self.headers {
            let field = f(&format!("headers.{name}"));
            // Header names are case-insensitive: lettre would keep only the last of the two.
            if !seen.insert(name.to_ascii_lowercase()) {
                return Err(FieldError::new(
                    field,
                    "is given twice (header names are case-insensitive)",
                ));
            }
            let valid_name = !name.is_empty()
                && name.len() <= 76
                && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
            if !valid_name {
                return Err(FieldError::new(
                    field,
                    "header names must be 1 to 76 printable ASCII characters without ':' or spaces",
                ));
            }
            let lower = name.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(FieldError::new(
                    field,
                    "is set by mailroom and cannot be overridden",
                ));
            }
            // Content-Disposition, Content-ID and the like describe the MIME body that mailroom
            // builds: set on the message they would change how receivers read it (an `attachment`
            // disposition hides the text). Content-Language only labels it.
            if lower.starts_with("content-") && lower != "content-language" {
                return Err(FieldError::new(
                    field,
                    "Content-* headers describe the MIME body mailroom builds and cannot be set (Content-Language can)",
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
        if let Some(when) = self.send_at
            && when > Utc::now() + chrono::Duration::days(MAX_SCHEDULE_DAYS)
        {
            return Err(FieldError::new(
                f("send_at"),
                format!("is {when}; the limit is {MAX_SCHEDULE_DAYS} days ahead"),
            ));
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
                // lettre folds a header only at spaces: a longer one would pass the 998-byte
                // line limit of RFC 5322, which strict relays refuse.
                if given.len() > MAX_CONTENT_TYPE_BYTES || !given.is_ascii() {
                    return Err(FieldError::new(
                        field("content_type"),
                        format!("must be ASCII, at most {MAX_CONTENT_TYPE_BYTES} bytes"),
                    ));
                }
                // An attachment is one leaf part: a multipart or message type would declare a
                // structure (boundaries, an enclosed message) its base64 content cannot have.
                let kind = given.trim_start().to_ascii_lowercase();
                if kind.starts_with("multipart/") || kind.starts_with("message/") {
                    return Err(FieldError::new(
                        field("content_type"),
                        "must not be a multipart/ or message/ type: an attachment is one file",
                    ));
                }
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
