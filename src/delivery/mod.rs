//! Delivery backends and the MIME building they share.
//!
//! A [`Delivery`] takes a built [`lettre::Message`] and says what happened. Its failures carry
//! the decision the worker acts on: [`DeliveryError::Temporary`] is retried with backoff,
//! [`DeliveryError::Throttled`] is retried and slows the sender, [`DeliveryError::Permanent`]
//! goes to the dead letters at once.

pub mod file;
pub mod mime;
#[cfg(feature = "ses")]
pub mod ses;
pub mod smtp;

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// Try again later: SMTP 4xx, timeouts, refused connections.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// The provider asks us to slow down (SMTP 421/454, SES throttling).
    #[error("throttled: {reason}")]
    Throttled {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Never going to work: SMTP 5xx, invalid recipients, a message that cannot be built.
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// The provider stopped the account from sending (SES sending paused): not the message's
    /// fault, so its lease is given back without using an attempt, and delivery stops until
    /// [`Delivery::check`] finds sending enabled again.
    #[error("sending paused: {0}")]
    Paused(String),
}

/// Whether a provider's reply says the account's daily sending quota is used up. SES says so as
/// a throttle (the API's `Throttling`, SMTP's 454), but retrying soon cannot help and would use
/// up every message's attempts: delivery pauses instead, without counting attempts.
pub fn quota_exhausted(reply: &str) -> bool {
    reply
        .to_ascii_lowercase()
        .contains("daily message quota exceeded")
}

/// A stop the provider put on all sending (an account paused, a daily quota used up), as last
/// seen: what [`Delivery::paused`] reports until [`Delivery::check`] finds sending possible.
#[derive(Default)]
pub struct Pause {
    reason: Mutex<Option<String>>,
}

impl Pause {
    pub fn set(&self, backend: &str, reason: &str) {
        let was = self
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(reason.to_string());
        if was.is_none() {
            tracing::error!(
                backend,
                reason,
                "The provider stopped sending for this account; delivery pauses until it may send again."
            );
        }
        metrics::gauge!("mailroom_delivery_paused").set(1.0);
    }

    pub fn clear(&self, backend: &str) {
        let was = self.reason.lock().unwrap_or_else(|p| p.into_inner()).take();
        if was.is_some() {
            tracing::info!(
                backend,
                "The provider may be sent to again; delivery resumes."
            );
        }
        metrics::gauge!("mailroom_delivery_paused").set(0.0);
    }

    pub fn get(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What the backend said when it took the message.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub detail: String,
}

#[async_trait]
pub trait Delivery: Send + Sync + 'static {
    async fn deliver(&self, email: &lettre::Message) -> Result<Receipt, DeliveryError>;

    /// Can the backend be reached? Used by `mailroom check`, and by the worker to find out
    /// whether a paused account may send again.
    async fn check(&self) -> Result<(), DeliveryError>;

    /// Why the backend is not sending at all right now (an account paused by the provider), as
    /// last seen; `None` when it sends. Cheap: read by `/ready` and before every pull.
    fn paused(&self) -> Option<String> {
        None
    }

    /// How many sends the backend takes at once (SMTP: its connections); `None`: no limit of
    /// its own. The worker takes a place among them before a rate-limit slot (see
    /// [`crate::worker::Worker::places`]).
    fn max_in_flight(&self) -> Option<usize> {
        None
    }

    fn name(&self) -> &'static str;
}

/// `DELIVERY=none`: nothing is sent; messages are archived only.
pub struct NoDelivery;

#[async_trait]
impl Delivery for NoDelivery {
    async fn deliver(&self, _email: &lettre::Message) -> Result<Receipt, DeliveryError> {
        Ok(Receipt {
            detail: "not sent (DELIVERY=none)".into(),
        })
    }

    async fn check(&self) -> Result<(), DeliveryError> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "none"
    }
}
