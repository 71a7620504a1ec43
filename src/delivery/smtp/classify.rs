//! What an SMTP failure means for the message: where in a send it came, and what the relay said.

use crate::delivery::{DeliveryError, quota_exhausted};

/// Where in a send an SMTP failure came, which decides what it says of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Opening a session: TLS (`smtps://`), the greeting, EHLO, STARTTLS, AUTH. No message is
    /// named yet, so a failure there refuses every message alike.
    Session,
    /// A message's own commands (MAIL, RCPT, DATA) and its end.
    Message,
}

/// Whether TLS itself refused the session, as against the network failing under it: lettre
/// reports both as a connection error, with rustls's error somewhere in its sources.
fn tls_refused(e: &lettre::transport::smtp::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return setup_refused(tls);
        }
        source = cause.source();
    }
    false
}

/// A TLS failure that the settings, not the moment, cause: a certificate that does not verify
/// (or none), or no protocol version or cipher suite in common. Other TLS errors (an alert from
/// a sick relay, a corrupt record) are retried like any broken connection, so one bad node
/// behind a relay's load balancer does not pause every worker.
pub(super) fn setup_refused(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::PeerIncompatible(_)
    )
}

/// Decides what an SMTP failure at `step` means for the message.
///
/// A session the relay refuses (a 5xx greeting: "554 client host blocked"; STARTTLS it does
/// not offer; a certificate that does not verify; credentials it does not take) pauses
/// delivery until the relay takes a session again (the worker's re-check opens one the same
/// way), instead of spending the attempts of each message pulled meanwhile and dead-lettering
/// them all: the setup is the operator's to fix. A 4xx there is still a retry or a throttle,
/// and a refused, dropped or timed-out connection a temporary failure, as DESIGN.md has them.
pub(super) fn classify(e: lettre::transport::smtp::Error, step: Step) -> DeliveryError {
    let text = e.to_string();
    let code = e.status().map(|c| c.to_string());
    let auth = || {
        DeliveryError::Paused(format!(
            "SMTP authentication failed, check SMTP_URL: {text}"
        ))
    };
    match (code.as_deref(), step) {
        (Some("530" | "534" | "535" | "538"), Step::Session) => auth(),
        (Some(c), Step::Session) if c.starts_with('5') => {
            DeliveryError::Paused(format!("the relay refused the session: {text}"))
        }
        (None, Step::Session) if e.is_client() || e.is_tls() || tls_refused(&e) => {
            DeliveryError::Paused(format!(
                "the session with the relay could not be set up, check SMTP_URL: {text}"
            ))
        }
        // "530 authentication required" to a message's MAIL FROM: the relay's or its
        // credentials' matter, not the message's; retried, never dead at once.
        (Some("530" | "534" | "535" | "538"), _) => DeliveryError::Temporary(format!(
            "SMTP authentication refused, check SMTP_URL: {text}"
        )),
        // SES's SMTP endpoint: "454 Throttling failure: Daily message quota exceeded."
        (Some("454"), _) if quota_exhausted(&text) => DeliveryError::Paused(text),
        // "Too many connections" and provider rate limits: slow down.
        (Some("421" | "454"), _) => DeliveryError::Throttled {
            reason: text,
            retry_after: None,
        },
        _ if e.is_permanent() => DeliveryError::Permanent(text),
        _ => DeliveryError::Temporary(text),
    }
}
