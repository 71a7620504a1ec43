//! `DELIVERY=smtp`: an async, pooled lettre transport to the relay in `SMTP_URL`.
//!
//! `smtp://user:pass@host:587?tls=required` (STARTTLS), `?tls=opportunistic`, `smtps://host:465`
//! (implicit TLS), plain `smtp://host:25`. A private relay CA can be trusted with
//! `&ca_file=/path/ca.pem`.

use std::time::Duration;

use async_trait::async_trait;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Delivery, DeliveryError, Receipt};

/// Checks an `SMTP_URL` without connecting: the reason it is wrong, if it is.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url)
        .map_err(|e| format!("not a URL ({e}); expected smtp://host:port or smtps://host:port"))?;
    if !matches!(parsed.scheme(), "smtp" | "smtps") {
        return Err("expected the scheme smtp:// or smtps://".into());
    }
    if parsed.host_str().is_none() {
        return Err("the URL names no host".into());
    }
    for (k, v) in parsed.query_pairs() {
        match (k.as_ref(), v.as_ref()) {
            ("tls", "required" | "opportunistic") | ("ca_file", _) => {}
            ("tls", other) => {
                return Err(format!("tls={other} is not one of required, opportunistic"));
            }
            (other, _) => {
                return Err(format!(
                    "unknown query parameter {other}; accepted: tls, ca_file"
                ));
            }
        }
    }
    Ok(())
}

pub struct SmtpDelivery {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// lettre's pool caps idle connections only; this caps open ones, so a burst of deliveries
    /// cannot open more connections than the relay was promised.
    connections: tokio::sync::Semaphore,
    /// lettre's timeout covers the TCP connect only; this bounds a whole send, so a stalled
    /// relay cannot hold a message past its lease.
    send_timeout: Duration,
}

impl SmtpDelivery {
    pub fn new(url: &str, timeout: Duration, pool_size: u32) -> Result<Self, String> {
        check_url(url)?;
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("invalid SMTP_URL: {e}"))?
            .timeout(Some(timeout))
            .pool_config(PoolConfig::new().max_size(pool_size.max(1)));
        if let Some(ca_file) = parsed
            .query_pairs()
            .find(|(k, _)| k == "ca_file")
            .map(|(_, v)| v.into_owned())
        {
            let host = parsed.host_str().unwrap_or_default().to_string();
            let pem = std::fs::read(&ca_file)
                .map_err(|e| format!("cannot read ca_file {ca_file}: {e}"))?;
            let cert =
                Certificate::from_pem(&pem).map_err(|e| format!("ca_file {ca_file}: {e}"))?;
            let params = TlsParameters::builder(host)
                .add_root_certificate(cert)
                .build()
                .map_err(|e| format!("TLS settings: {e}"))?;
            let tls_mode = parsed
                .query_pairs()
                .find(|(k, _)| k == "tls")
                .map(|(_, v)| v.into_owned());
            builder = builder.tls(match (parsed.scheme(), tls_mode.as_deref()) {
                ("smtps", _) => Tls::Wrapper(params),
                (_, Some("opportunistic")) => Tls::Opportunistic(params),
                _ => Tls::Required(params),
            });
        }
        Ok(Self {
            transport: builder.build(),
            connections: tokio::sync::Semaphore::new(pool_size.max(1) as usize),
            send_timeout: timeout,
        })
    }
}

/// Decides what an SMTP failure means for the message.
fn classify(e: lettre::transport::smtp::Error) -> DeliveryError {
    let text = e.to_string();
    let code = e.status().map(|c| c.to_string());
    match code.as_deref() {
        // Authentication problems are the operator's to fix, not the message's fault: keep the
        // message and retry rather than dead-lettering every message behind a bad password.
        Some("530" | "534" | "535" | "538") => DeliveryError::Temporary(format!(
            "SMTP authentication failed, check SMTP_URL: {text}"
        )),
        // "Too many connections" and provider rate limits: slow down.
        Some("421" | "454") => DeliveryError::Throttled {
            reason: text,
            retry_after: None,
        },
        _ if e.is_permanent() => DeliveryError::Permanent(text),
        _ => DeliveryError::Temporary(text),
    }
}

#[async_trait]
impl Delivery for SmtpDelivery {
    async fn deliver(&self, email: &lettre::Message) -> Result<Receipt, DeliveryError> {
        let _connection = self
            .connections
            .acquire()
            .await
            .map_err(|_| DeliveryError::Temporary("the SMTP transport is closed".into()))?;
        let response = tokio::time::timeout(self.send_timeout, self.transport.send(email.clone()))
            .await
            .map_err(|_| {
                DeliveryError::Temporary(format!(
                    "the relay did not finish the send within {} s (SMTP_TIMEOUT_SECS)",
                    self.send_timeout.as_secs()
                ))
            })?
            .map_err(classify)?;
        let text: Vec<&str> = response.message().collect();
        Ok(Receipt {
            detail: format!("{} {}", response.code(), text.join(" ")),
        })
    }

    async fn check(&self) -> Result<(), DeliveryError> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(DeliveryError::Temporary(
                "the relay did not answer NOOP".into(),
            )),
            Err(e) => Err(classify(e)),
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
}
