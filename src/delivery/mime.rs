//! Builds the RFC 5322 message for a [`Message`], the same for every backend.

use std::borrow::Cow;
use std::time::SystemTime;

use lettre::message::header::{
    Bcc, Cc, ContentTransferEncoding, Header, HeaderName, HeaderValue, Headers, ReplyTo, To,
};
use lettre::message::{
    Attachment, Body, Mailbox, Mailboxes, MessageBuilder, MultiPart, SinglePart,
};

use super::DeliveryError;
use crate::message::{Content, Message, deliverable};

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
    let parse = |field: &str, value: &str| deliverable(value).map_err(|e| bad(field, &e));
    let id_header = HeaderName::new_from_ascii_str("X-Mailroom-Id");
    let mut builder = lettre::Message::builder()
        .raw_header(HeaderValue::new(id_header, message.id.to_string()))
        // A scheduled message is dated when it was meant to go out, not when it was accepted
        // (days before, it would sort far down the recipient's inbox).
        .date(SystemTime::from(
            message.due_later().unwrap_or_else(|| message.time()),
        ));
    // To, Cc and Reply-To as parsed, for folding once the message is built (a compat message
    // has its one recipient).
    let mut lists: Vec<(HeaderName, Vec<Mailbox>)> = Vec::new();
    let mut email = match &message.content {
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
                .singlepart(SinglePart::plain(
                    line_breaks(&c.email_content).into_owned(),
                ))
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
            let list = |field: &str, addresses: &[String]| -> Result<Vec<Mailbox>, _> {
                addresses.iter().map(|a| parse(field, a)).collect()
            };
            let (to, cc) = (list("to", &n.to)?, list("cc", &n.cc)?);
            let (bcc, reply_to) = (list("bcc", &n.bcc)?, list("reply_to", &n.reply_to)?);
            builder = with_list::<To>(builder, &to);
            builder = with_list::<Cc>(builder, &cc);
            builder = with_list::<Bcc>(builder, &bcc);
            builder = with_list::<ReplyTo>(builder, &reply_to);
            lists = vec![
                (To::name(), to),
                (Cc::name(), cc),
                (ReplyTo::name(), reply_to),
            ];
            for (name, value) in &n.headers {
                let name =
                    HeaderName::new_from_ascii(name.clone()).map_err(|e| bad("header", &e))?;
                builder = builder.raw_header(HeaderValue::new(name, value.clone()));
            }
            let text = n.text.as_deref().map(|t| line_breaks(t).into_owned());
            let html = n.html.as_deref().map(|h| line_breaks(h).into_owned());
            let body = match (text, html) {
                (Some(t), Some(h)) => Text::Multi(MultiPart::alternative_plain_html(t, h)),
                (Some(t), None) => Text::Single(SinglePart::plain(t)),
                (None, Some(h)) => Text::Single(SinglePart::html(h)),
                (None, None) => return Err(bad("body", &"no text and no html")),
            };
            let built = if n.attachments.is_empty() {
                match body {
                    Text::Multi(m) => builder.multipart(m),
                    Text::Single(s) => builder.singlepart(s),
                }
            } else {
                // multipart/mixed: the text (or its alternatives) first, then each file.
                let mut mixed = match body {
                    Text::Multi(m) => MultiPart::mixed().multipart(m),
                    Text::Single(s) => MultiPart::mixed().singlepart(s),
                };
                for a in &n.attachments {
                    let bytes = a.bytes().map_err(|e| bad("attachment content", &e))?;
                    let content_type = a.mime_type().map_err(|e| bad("attachment type", &e))?;
                    // Always base64: lettre would send short ASCII lines as 7bit, bytes as they
                    // are, and a lone CR or LF in a file (`\r.\r\n`) would reach the relay raw.
                    let body = Body::new_with_encoding(bytes, ContentTransferEncoding::Base64)
                        .map_err(|_| bad("attachment content", &"cannot be base64-encoded"))?;
                    mixed = mixed
                        .singlepart(Attachment::new(a.filename.clone()).body(body, content_type));
                }
                builder.multipart(mixed)
            };
            built.map_err(|e| bad("message", &e))?
        }
    };
    for (name, list) in lists {
        fold_address_list(email.headers_mut(), name, list);
    }
    Ok(Some(email))
}

/// Sets an address list header at once, when the list is not empty. (lettre's `to()` and its
/// kin add one address at a time, parsing the whole header again for each.)
fn with_list<H: Header + From<Mailboxes>>(
    builder: MessageBuilder,
    list: &[Mailbox],
) -> MessageBuilder {
    if list.is_empty() {
        return builder;
    }
    builder.header(H::from(Mailboxes::from(list.to_vec())))
}

/// A body's line breaks as LF alone, which lettre writes as CRLF: a lone CR (an old Mac line
/// end, or a client's attempt at SMTP smuggling) is a line break too. lettre turns only LF into
/// CRLF and dot-stuffs only after a CRLF, so a lone CR would reach the relay as it is in a 7bit
/// body, where `\r.\r\n` ends DATA for relays that take a bare CR as a line end.
fn line_breaks(body: &str) -> Cow<'_, str> {
    if !body.contains('\r') {
        return Cow::Borrowed(body);
    }
    Cow::Owned(body.replace("\r\n", "\n").replace('\r', "\n"))
}

/// The longest header line RFC 5322 recommends (2.1.1); folding aims for it.
const FOLD_AT: usize = 78;

/// Folds an address list header (To, Cc, Reply-To) between its addresses. lettre writes an
/// address list on one line whatever its length (it folds only inside display names), so 50
/// recipients came to over the 998 octets RFC 5322 allows a line, which SES refuses and relays
/// cut mid-address. Each address keeps lettre's own encoding (ASCII: addresses are validated,
/// names quoted or RFC 2047 words, any line break followed by a space); only the separators
/// change. A list of fewer than two is left as lettre wrote it.
fn fold_address_list(headers: &mut Headers, name: HeaderName, list: Vec<Mailbox>) {
    if list.len() < 2 {
        return;
    }
    let list = Mailboxes::from(list);
    let raw = list.to_string();
    let mut folded = String::new();
    let mut line = name.len() + ": ".len();
    for (i, mailbox) in list.into_iter().enumerate() {
        let encoded = encoded_mailbox(mailbox);
        let first = encoded.split("\r\n").next().unwrap_or_default().len();
        if i > 0 {
            // Room kept for the comma that may follow it on the same line.
            if line + ", ".len() + first + ",".len() > FOLD_AT {
                folded.push_str(",\r\n ");
                line = 1;
            } else {
                folded.push_str(", ");
                line += 2;
            }
        }
        line = match encoded.rsplit_once("\r\n") {
            Some((_, last)) => last.len(),
            None => line + encoded.len(),
        };
        folded.push_str(&encoded);
    }
    headers.insert_raw(HeaderValue::dangerous_new_pre_encoded(name, raw, folded));
}

/// One address as lettre encodes it in a header (RFC 2047 words for a non-ASCII name, folded
/// inside a long one), without the header's name.
fn encoded_mailbox(mailbox: Mailbox) -> String {
    let mut one = Headers::new();
    one.set(To::from(Mailboxes::from(mailbox)));
    let line = one.to_string();
    line.strip_prefix("To: ")
        .and_then(|l| l.strip_suffix("\r\n"))
        .unwrap_or(&line)
        .to_owned()
}

/// A message's text part(s), before any attachments are added.
enum Text {
    Single(SinglePart),
    Multi(MultiPart),
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
        let m = Message::new(Content::Native(Box::new(native())));
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

    /// A message accepted without `from` carries the API's DEFAULT_FROM: a worker configured
    /// without one (another process, or a changed setting while it waited for its `send_at`)
    /// still builds it.
    #[test]
    fn default_from_travels_with_the_message() {
        let templates = crate::message::Templates::default();
        let default_from: Mailbox = "Shop <noreply@example.com>".parse().expect("an address");
        let rules = crate::message::NativeRules {
            default_from: Some(&default_from),
            templates: &templates,
        };
        let body = serde_json::json!({"to": ["a@example.com"], "subject": "s", "text": "t"});
        let n = NativeEmail::parse(body, "", rules).expect("valid");
        let m = Message::new(Content::Native(Box::new(n)));
        let email = build(&m, &MimeSettings::default())
            .expect("builds without the worker's DEFAULT_FROM")
            .expect("has recipients");
        let text = String::from_utf8(email.formatted()).expect("utf-8");
        assert!(text.contains("From: Shop <noreply@example.com>"), "{text}");
    }

    /// Attachments make the message multipart/mixed: the alternatives first, then each file with
    /// its name (RFC 2231-encoded when it is not plain ASCII), its type, and its exact bytes.
    #[test]
    fn attachments_follow_the_text() {
        use base64::Engine;
        let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let mut n = native();
        n.attachments = vec![
            crate::message::Attachment {
                filename: "report.pdf".into(),
                content_type: Some("application/pdf".into()),
                content: base64::engine::general_purpose::STANDARD.encode(&bytes),
            },
            crate::message::Attachment {
                filename: "résumé \"final\".txt".into(),
                content_type: None,
                content: "aGVsbG8=".into(),
            },
        ];
        let m = Message::new(Content::Native(Box::new(n)));
        let text = String::from_utf8(
            build(&m, &MimeSettings::default())
                .expect("ok")
                .expect("some")
                .formatted(),
        )
        .expect("utf-8");
        let mixed = text.find("multipart/mixed").expect("mixed");
        let alternative = text.find("multipart/alternative").expect("alternative");
        let pdf = text
            .find("Content-Disposition: attachment; filename=\"report.pdf\"")
            .expect("pdf part");
        assert!(mixed < alternative && alternative < pdf, "{text}");
        assert!(text.contains("Content-Type: application/pdf"), "{text}");
        assert!(
            text.contains("Content-Type: application/octet-stream"),
            "{text}"
        );
        assert!(
            text.contains("filename*"),
            "non-ASCII name RFC 2231-encoded: {text}"
        );
        assert_eq!(attachment_bytes(&text[pdf..]), bytes);
    }

    /// The bytes of the attachment whose part starts `part`: its base64 lines after the blank
    /// line, up to the next boundary. The part must say it is base64.
    fn attachment_bytes(part: &str) -> Vec<u8> {
        use base64::Engine;
        let (head, body) = part.split_once("\r\n\r\n").expect("its body");
        assert!(head.contains("Content-Transfer-Encoding: base64"), "{part}");
        let encoded: String = body.lines().take_while(|l| !l.starts_with("--")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .expect("base64")
    }

    /// Builds the message and checks that no header line passes 78 octets; returns it and its
    /// header section.
    fn built_with_short_header_lines(n: NativeEmail) -> (lettre::Message, String) {
        let m = Message::new(Content::Native(Box::new(n)));
        let email = build(&m, &MimeSettings::default())
            .expect("builds")
            .expect("has recipients");
        let text = String::from_utf8(email.formatted()).expect("utf-8");
        let (head, _) = text.split_once("\r\n\r\n").expect("a header section");
        for line in head.split("\r\n") {
            assert!(line.len() <= 78, "a line of {}: {line:?}", line.len());
        }
        (email, head.to_owned())
    }

    /// Fifty recipients, as many as a message may have, fold into header lines of at most 78
    /// octets between their addresses, and every one of them is still in To and the envelope.
    #[test]
    fn long_address_lists_are_folded() {
        let mut n = native();
        n.to = (0..25).map(|i| format!("user{i:02}@example.com")).collect();
        n.cc = (0..24)
            .map(|i| format!("Ünïcode Name {i} <cc{i:02}@example.com>"))
            .collect();
        n.reply_to = vec!["a@example.com".into(), "b@example.com".into()];
        let (email, head) = built_with_short_header_lines(n);
        let to: Mailboxes = email.headers().get::<To>().expect("To").into();
        assert_eq!(to.iter().count(), 25);
        let cc: Mailboxes = email.headers().get::<Cc>().expect("Cc").into();
        assert_eq!(cc.iter().count(), 24);
        assert_eq!(
            cc.iter().last().expect("one").email.to_string(),
            "cc23@example.com"
        );
        assert!(
            head.contains("To: user00@example.com, user01@example.com,"),
            "{head}"
        );
        assert!(
            head.contains("Reply-To: a@example.com, b@example.com\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\n user"), "continuation lines: {head}");
        // The unfolded header reads back as the same addresses (RFC 5322 unfolding).
        let unfolded = head.replace("\r\n ", " ");
        let to_line = unfolded
            .lines()
            .find(|l| l.starts_with("To: "))
            .expect("To");
        assert_eq!(to_line.matches('@').count(), 25, "{to_line}");
        assert_eq!(email.envelope().to().len(), 25 + 24 + 1);
    }

    /// Whatever the lengths of the addresses, no folded line of an address list passes 78
    /// octets, its trailing comma included (unless one address alone is that long).
    #[test]
    fn folded_lines_keep_room_for_their_comma() {
        for local in 1..=60 {
            let mut n = native();
            n.to = (0..50)
                .map(|i| format!("{}{i}@example.com", "x".repeat(local)))
                .collect();
            n.bcc.clear();
            let (email, _) = built_with_short_header_lines(n);
            assert_eq!(email.envelope().to().len(), 50);
        }
    }

    /// Builds the message and checks that CRLF is its only line end; returns it as text.
    fn built_with_crlf_only(n: NativeEmail) -> String {
        let m = Message::new(Content::Native(Box::new(n)));
        let raw = build(&m, &MimeSettings::default())
            .expect("builds")
            .expect("has recipients")
            .formatted();
        let text = String::from_utf8(raw).expect("utf-8");
        let lone_cr = text
            .match_indices('\r')
            .any(|(i, _)| !text[i..].starts_with("\r\n"));
        let lone_lf = text
            .match_indices('\n')
            .any(|(i, _)| i == 0 || !text[..i].ends_with('\r'));
        assert!(!lone_cr && !lone_lf, "{text:?}");
        text
    }

    /// An attachment is base64 whatever it holds: a text file with lone CRs and LFs and a line
    /// of `.` (which lettre would otherwise send as 7bit, byte for byte) leaves no line end but
    /// CRLF in the message, and decodes to its exact bytes.
    #[test]
    fn attachments_are_base64_whatever_they_hold() {
        use base64::Engine;
        let content = b"a\r.\r\nMAIL FROM:<x@example.com>\n.\nend";
        let mut n = native();
        n.attachments = vec![crate::message::Attachment {
            filename: "notes.txt".into(),
            content_type: Some("text/plain".into()),
            content: base64::engine::general_purpose::STANDARD.encode(content),
        }];
        let text = built_with_crlf_only(n);
        let part = &text[text.find("filename=\"notes.txt\"").expect("the part")..];
        assert_eq!(attachment_bytes(part), content);
    }

    /// A lone CR in a body is a line break like any other: the built message has no line end but
    /// CRLF, so `\r.\r\n` cannot end DATA early at a relay that takes a bare CR as a line end.
    #[test]
    fn a_lone_cr_in_a_body_becomes_a_line_break() {
        let mut n = native();
        n.text = Some("hi\r.\r\nMAIL FROM:<ceo@example.com>\r\nDATA\rend".into());
        n.html = Some("<p>a</p>\r<p>b</p>".into());
        let text = built_with_crlf_only(n);
        assert!(
            text.contains("hi\r\n.\r\nMAIL FROM:<ceo@example.com>\r\nDATA\r\nend"),
            "{text:?}"
        );
        assert!(text.contains("<p>a</p>\r\n<p>b</p>"), "{text:?}");
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
