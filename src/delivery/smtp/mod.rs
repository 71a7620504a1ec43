//! `DELIVERY=smtp`: lettre's SMTP client over a small pool of connections to the relay in
//! `SMTP_URL`: `relay_url` reads the URL, `session` opens sessions and sends over them, `classify`
//! decides what a failure means for the message.
//!
//! `smtp://user:pass@host:587?tls=required` (STARTTLS), `?tls=opportunistic`, `smtps://host:465`
//! (implicit TLS), plain `smtp://host:25`. A private relay CA can be trusted with
//! `&ca_file=/path/ca.pem`.
//!
//! Why mailroom does not use lettre's pooled transport: lettre 0.11 writes a message and its
//! `\r\n.\r\n` terminator in two writes on a socket without `TCP_NODELAY`, so Nagle's algorithm
//! holds the terminator back until the relay's delayed ACK, about 40 ms on Linux: one connection
//! then carries at most ~25 messages a second (`bench/smtp_write_probe.py` measures 44 ms per
//! message against 0.8 ms with `TCP_NODELAY`). The transport has no option for it and its
//! executor trait is sealed, so mailroom opens the TCP connection itself, sets `TCP_NODELAY`,
//! for `smtps://` starts TLS on it (rustls, set up as lettre sets it up for STARTTLS), and hands
//! it to lettre's
//! `AsyncSmtpConnection` (EHLO, STARTTLS, AUTH and the SMTP commands stay lettre's), keeping
//! idle connections in a small pool.
//!
//! Each step of a send has its own time limit: the session and each command
//! `SMTP_TIMEOUT_SECS`, and the relay's answer to the end of the message the ten minutes of RFC
//! 5321 (4.5.3.2.6), because a relay may scan a message, or pass it on, before it answers, and
//! a message it took whose answer was cut off would be sent again at each try. lettre's `send`
//! runs the commands as one call, so mailroom issues them itself with lettre's command types.

mod classify;
mod relay_url;
mod session;

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{SMTP_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT};

pub use self::relay_url::check_url;
use self::relay_url::{implicit_tls, relay_host, tls_parameters};
use self::session::Direct;
use super::{Delivery, DeliveryError, Pause, Receipt};

pub struct SmtpDelivery {
    relay: Direct,
    /// Caps open connections (the pool keeps only idle ones), so a burst of deliveries cannot
    /// open more connections than the relay was promised.
    connections: tokio::sync::Semaphore,
    pool_size: usize,
    /// `SMTP_TIMEOUT_SECS`: the limit of opening a session and of each command (the end of a
    /// message has [`session::FINAL_REPLY_WITHIN`]).
    send_timeout: Duration,
    /// Set by a relay that says the account's daily quota is used up (SES's SMTP endpoint).
    pause: Pause,
    /// The relay is SES's SMTP endpoint (`email-smtp.REGION.amazonaws.com`), whose send rate
    /// counts recipients, as SES's API does.
    counts_recipients: bool,
}

impl SmtpDelivery {
    pub fn new(url: &str, timeout: Duration, pool_size: u32) -> Result<Self, String> {
        check_url(url)?;
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        let tls_mode = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(Cow::into_owned)
                .map_err(|e| format!("SMTP_URL user or password is not UTF-8: {e}"))
        };
        let credentials = match parsed.password() {
            Some(password) => Some(Credentials::new(
                decode(parsed.username())?,
                decode(password)?,
            )),
            None => None,
        };
        // As lettre does: the URL's path, if any, is the name given in EHLO.
        let hello = match parsed.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_string()),
        };
        let counts_recipients = is_ses_endpoint(&relay_host(&parsed));
        let (implicit_tls, starttls, default_port) = if parsed.scheme() == "smtps" {
            (Some(implicit_tls(&parsed)?), None, SUBMISSIONS_PORT)
        } else {
            match tls_mode.as_deref() {
                Some(mode) => (
                    None,
                    Some((tls_parameters(&parsed)?, mode == "required")),
                    SUBMISSION_PORT,
                ),
                None => (None, None, SMTP_PORT),
            }
        };
        let relay = Direct {
            host: relay_host(&parsed),
            port: parsed.port().unwrap_or(default_port),
            hello,
            implicit_tls,
            starttls,
            credentials,
            connect_timeout: timeout,
            idle: std::sync::Mutex::new(Vec::new()),
        };
        Ok(Self {
            relay,
            connections: tokio::sync::Semaphore::new(pool_size.max(1) as usize),
            pool_size: pool_size.max(1) as usize,
            send_timeout: timeout,
            pause: Pause::default(),
            counts_recipients,
        })
    }
}

/// SES's SMTP endpoints: `email-smtp.REGION.amazonaws.com` (and the FIPS and China names), and
/// their VPC endpoints (`vpce-ID.email-smtp.REGION.vpce.amazonaws.com`).
fn is_ses_endpoint(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let amazon = host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn");
    let ses = host.starts_with("email-smtp.")
        || host.starts_with("email-smtp-fips.")
        || (host.starts_with("vpce-") && host.contains(".email-smtp."));
    amazon && ses
}

#[async_trait]
impl Delivery for SmtpDelivery {
    async fn deliver(&self, email: &lettre::Message) -> Result<Receipt, DeliveryError> {
        let _connection = self
            .connections
            .acquire()
            .await
            .map_err(|_| DeliveryError::Temporary("the SMTP transport is closed".into()))?;
        let sent = self.relay.send(email, self.send_timeout).await;
        if let Err(DeliveryError::Paused(reason)) = &sent {
            self.pause.set("smtp", reason);
        }
        let response = sent?;
        self.pause.sent();
        let text: Vec<&str> = response.message().collect();
        Ok(Receipt {
            detail: format!("{} {}", response.code(), text.join(" ")),
        })
    }

    /// Connects and asks for NOOP. A relay that answers ends a pause: the next message finds out
    /// whether the quota is back (the relay says nothing of it before a send), and a pause that
    /// comes straight back makes the next check wait longer ([`Pause`]).
    async fn check(&self) -> Result<(), DeliveryError> {
        // The whole check has SMTP_TIMEOUT_SECS, as a send has: the connect's own timeout
        // covers the TCP connect only, and a relay that accepts and then says nothing (an
        // implicit-TLS port named with `smtp://`, a stuck relay) would hold it for ever.
        let ask = async {
            let mut conn = self.relay.connect().await?;
            let answered = conn.test_connected().await;
            conn.abort().await;
            if answered {
                Ok(())
            } else {
                Err(DeliveryError::Temporary(
                    "the relay did not answer NOOP".into(),
                ))
            }
        };
        let answered = tokio::time::timeout(self.send_timeout, ask)
            .await
            .unwrap_or_else(|_| {
                Err(DeliveryError::Temporary(format!(
                    "the relay did not answer within {} s (SMTP_TIMEOUT_SECS)",
                    self.send_timeout.as_secs()
                )))
            });
        if answered.is_ok() {
            self.pause.clear("smtp");
        }
        answered
    }

    fn paused(&self) -> Option<String> {
        self.pause.get()
    }

    fn recheck_in(&self) -> Duration {
        self.pause.recheck_in()
    }

    fn max_in_flight(&self) -> Option<usize> {
        Some(self.pool_size)
    }

    /// One slot per recipient through SES's SMTP endpoint, as its MaxSendRate counts them; one
    /// per message through any other relay.
    fn rate_cost(&self, email: &lettre::Message) -> u32 {
        if self.counts_recipients {
            super::recipients_cost(email)
        } else {
            1
        }
    }

    fn name(&self) -> &'static str {
        "smtp"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SMTP_URL mistakes are caught at start-up with a reason.
    #[test]
    fn url_checks() {
        assert!(check_url("smtp://user:pw@relay.example.com:587?tls=required").is_ok());
        assert!(check_url("smtps://relay.example.com").is_ok());
        assert!(check_url("http://relay").unwrap_err().contains("scheme"));
        assert!(
            check_url("smtp://relay?tls=always")
                .unwrap_err()
                .contains("tls=always")
        );
        assert!(
            check_url("smtp://relay?colour=red")
                .unwrap_err()
                .contains("colour")
        );
    }

    /// `tls=` with `smtps://` is refused (it is for STARTTLS), and so is a `ca_file` that holds no
    /// certificate: both would otherwise show only at the first send, as a paused delivery.
    #[test]
    fn smtps_settings_that_cannot_work_are_refused() {
        let err = check_url("smtps://relay.example.com:587?tls=required").expect_err("refused");
        assert!(err.contains("smtp://host:587?tls=required"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("written");
        let built = SmtpDelivery::new(
            &format!("smtps://relay.example.com?ca_file={}", empty.display()),
            Duration::from_secs(1),
            1,
        );
        let err = built.err().expect("refused");
        assert!(err.contains("holds no certificate"), "{err}");
    }

    /// Through SES's SMTP endpoint (or its VPC endpoint) a message costs a slot per recipient,
    /// as SES counts them; through another relay, one.
    #[tokio::test]
    async fn ses_smtp_endpoints_count_recipients() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let email = lettre::Message::builder()
            .from("a@example.com".parse().expect("address"))
            .to("b@example.com".parse().expect("address"))
            .to("c@example.com".parse().expect("address"))
            .bcc("d@example.com".parse().expect("address"))
            .subject("s")
            .body(String::from("t"))
            .expect("builds");
        let cost = |url: &str| {
            SmtpDelivery::new(url, Duration::from_secs(1), 1)
                .expect("a relay URL")
                .rate_cost(&email)
        };
        assert_eq!(
            cost("smtp://u:p@email-smtp.eu-west-1.amazonaws.com:587?tls=required"),
            3
        );
        assert_eq!(cost("smtps://u:p@EMAIL-SMTP.us-east-1.amazonaws.com"), 3);
        assert_eq!(cost("smtp://relay.example.com:25"), 1);
        assert_eq!(cost("smtp://email-smtp.example.com:25"), 1);
        assert_eq!(
            cost("smtp://u:p@vpce-0a1b2c3d-e4f5g6h7.email-smtp.eu-west-1.vpce.amazonaws.com:587"),
            3
        );
    }

    /// An IPv6 literal is the relay's address and TLS name without its brackets; implicit TLS
    /// to one builds (it stopped start-up with "TLS settings" before).
    #[tokio::test]
    async fn ipv6_literals() {
        let host = |u: &str| relay_host(&url::Url::parse(u).expect("a URL"));
        assert_eq!(host("smtp://[2001:db8::25]:25"), "2001:db8::25");
        assert_eq!(host("smtp://relay.example.com"), "relay.example.com");
        assert_eq!(host("smtp://192.0.2.25:25"), "192.0.2.25");
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let built = SmtpDelivery::new("smtps://u:p@[2001:db8::25]", Duration::from_secs(1), 1);
        assert!(built.is_ok(), "{:?}", built.err());
    }
}
