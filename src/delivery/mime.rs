//! Builds the RFC 5322 message for a [`Message`], the same for every backend.

use std::time::SystemTime;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};

use super::DeliveryError;
use crate::message::{Content, Message};

/// What building a message needs from the configuration.
#[derive(Debug, Clone, Default)]
pub struct MimeSettings {
    pub default_from: Option<Mailbox>,
    /// Where compat messages (which name no recipient) are sent; `None`: archive only.
    pub compat_recipient: Option<Mailbox>,
}

/// Builds the message, or `None` when it has no recipient (a compat message without
/// `COMPAT_RECIPIENT`). Everything here was validated at the API, so an error is permanent.
pub fn build(
    message: &Message,
    settings: &MimeSettings,
) -> Result<Option<lettre::Message>, DeliveryError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        DeliveryError::Permanent(format!("cannot build the message: {what}: {e}"))
    };
    let parse = |field: &str, value: &str| value.parse::<Mailbox>().map_err(|e| bad(field, &e));
    let id_header = HeaderName::new_from_ascii_str("X-Mailroom-Id");
    let mut builder = lettre::Message::builder()
        .raw_header(HeaderValue::new(id_header, message.id.to_string()))
        .date(SystemTime::from(message.time()));
    let email = match &message.content {
        Content::Compat(c) => {
            let Some(to) = &settings.compat_recipient else {
                return Ok(None);
            };
            let from = settings
                .default_from
                .as_ref()
                .ok_or_else(|| bad("from", &"DEFAULT_FROM is not set"))?;
            let from = Mailbox::new(Some(c.email_sender.clone()), from.email.clone());
            builder = builder
                .message_id(Some(message_id(message, &from)))
                .from(from)
                .to(to.clone())
                .subject(c.email_subject.clone());
            builder
                .singlepart(SinglePart::plain(c.email_content.clone()))
                .map_err(|e| bad("body", &e))?
        }
        Content::Native(n) => {
            let from = match &n.from {
                Some(f) => parse("from", f)?,
                None => settings
                    .default_from
                    .clone()
                    .ok_or_else(|| bad("from", &"no from and no DEFAULT_FROM"))?,
            };
            builder = builder
                .message_id(Some(message_id(message, &from)))
                .from(from)
                .subject(n.subject.clone());
            for a in &n.to {
                builder = builder.to(parse("to", a)?);
            }
            for a in &n.cc {
                builder = builder.cc(parse("cc", a)?);
            }
            for a in &n.bcc {
                builder = builder.bcc(parse("bcc", a)?);
            }
            for a in &n.reply_to {
                builder = builder.reply_to(parse("reply_to", a)?);
            }
            for (name, value) in &n.headers {
                let name =
                    HeaderName::new_from_ascii(name.clone()).map_err(|e| bad("header", &e))?;
                builder = builder.raw_header(HeaderValue::new(name, value.clone()));
            }
            let built = match (&n.text, &n.html) {
                (Some(t), Some(h)) => {
                    builder.multipart(MultiPart::alternative_plain_html(t.clone(), h.clone()))
                }
                (Some(t), None) => builder.singlepart(SinglePart::plain(t.clone())),
                (None, Some(h)) => builder.singlepart(SinglePart::html(h.clone())),
                (None, None) => return Err(bad("body", &"no text and no html")),
            };
            built.map_err(|e| bad("message", &e))?
        }
    };
    Ok(Some(email))
}

/// `<{id}@{sender's domain}>`: stable across redeliveries, so receivers can deduplicate.
fn message_id(message: &Message, from: &Mailbox) -> String {
    format!("<{}@{}>", message.id, from.email.domain())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{CompatEmail, NativeEmail};

    fn native() -> NativeEmail {
        serde_json::from_value(serde_json::json!({
            "from": "Shop <shop@example.com>", "to": ["a@example.com"], "bcc": "hidden@example.com",
            "subject": "Your receipt", "text": "Thanks", "html": "<p>Thanks</p>",
            "headers": {"X-Campaign": "spring"}
        }))
        .expect("valid")
    }

    /// A native message carries its headers, both bodies, and a Message-ID from its id; Bcc is
    /// in the envelope but not in the headers.
    #[test]
    fn native_message_headers() {
        let m = Message::new(Content::Native(native()));
        let email = build(&m, &MimeSettings::default())
            .expect("builds")
            .expect("has recipients");
        let text = String::from_utf8(email.formatted()).expect("utf-8");
        assert!(text.contains("From: Shop <shop@example.com>"), "{text}");
        assert!(text.contains("Subject: Your receipt"));
        assert!(text.contains("X-Campaign: spring"));
        assert!(text.contains(&format!("Message-ID: <{}@example.com>", m.id)));
        assert!(text.contains("multipart/alternative"));
        assert!(!text.contains("hidden@example.com"));
        let rcpt: Vec<String> = email
            .envelope()
            .to()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(rcpt, ["a@example.com", "hidden@example.com"]);
    }

    /// A compat message goes to COMPAT_RECIPIENT from the sender's display name at DEFAULT_FROM,
    /// and is not built at all without a recipient.
    #[test]
    fn compat_message_uses_configured_addresses() {
        let m = Message::new(Content::Compat(CompatEmail {
            email_subject: "Hello".into(),
            email_sender: "John doe".into(),
            email_timestream: "1700000000".into(),
            email_content: "Body".into(),
        }));
        assert!(build(&m, &MimeSettings::default()).expect("ok").is_none());
        let settings = MimeSettings {
            default_from: Some("noreply@example.com".parse().expect("valid")),
            compat_recipient: Some("ops@example.com".parse().expect("valid")),
        };
        let text = String::from_utf8(build(&m, &settings).expect("ok").expect("some").formatted())
            .expect("utf-8");
        assert!(
            text.contains("From: \"John doe\" <noreply@example.com>")
                || text.contains("From: John doe <noreply@example.com>"),
            "{text}"
        );
        assert!(text.contains("To: ops@example.com"));
        assert!(text.contains("Date: Tue, 14 Nov 2023 22:13:20"), "{text}");
    }
}
