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
    /// The provider stopped the account from sending (SES sending paused, a daily quota used
    /// up): not the message's fault, so its lease is given back without using an attempt, and
    /// delivery stops until [`Delivery::check`] finds sending possible again.
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
///
/// A check cannot always tell (a relay answers `NOOP` whether or not the quota is back), so the
/// first pull after a resume finds out. Each pause that follows a resume with no message sent in
/// between doubles the wait before the next check, from [`PAUSE_RECHECK`] up to
/// [`PAUSE_RECHECK_MAX`]: a quota used up for the rest of the day costs a pull every quarter of
/// an hour, not one every 30 s.
#[derive(Default)]
pub struct Pause {
    state: Mutex<PauseState>,
}

#[derive(Default)]
struct PauseState {
    reason: Option<String>,
    /// Pauses in a row that a resume did not end (no message sent since).
    strikes: u32,
    /// Resumed, and no message sent since.
    unproven: bool,
}

/// The first wait before a paused backend is asked again whether it may send.
pub const PAUSE_RECHECK: Duration = Duration::from_secs(30);
/// The longest wait between two such checks.
pub const PAUSE_RECHECK_MAX: Duration = Duration::from_secs(15 * 60);

impl Pause {
    fn state(&self) -> std::sync::MutexGuard<'_, PauseState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, backend: &str, reason: &str) {
        let mut state = self.state();
        let was = state.reason.replace(reason.to_string());
        if std::mem::take(&mut state.unproven) {
            state.strikes = state.strikes.saturating_add(1);
        }
        if was.is_none() {
            tracing::error!(
                backend,
                reason,
                recheck_in_secs = recheck_after(state.strikes).as_secs(),
                "The provider stopped sending for this account; delivery pauses until it may send again."
            );
        }
        metrics::gauge!("mailroom_delivery_paused").set(1.0);
    }

    /// A check found that the backend may send: delivery resumes, on trial until a message
    /// goes out.
    pub fn clear(&self, backend: &str) {
        let mut state = self.state();
        if state.reason.take().is_some() {
            state.unproven = true;
            tracing::info!(
                backend,
                "The provider may be sent to again; delivery resumes."
            );
        }
        metrics::gauge!("mailroom_delivery_paused").set(0.0);
    }

    /// A message went out: the next pause starts again from the shortest wait.
    pub fn sent(&self) {
        let mut state = self.state();
        state.unproven = false;
        state.strikes = 0;
    }

    pub fn get(&self) -> Option<String> {
        self.state().reason.clone()
    }

    /// How long to wait before asking the backend again.
    pub fn recheck_in(&self) -> Duration {
        recheck_after(self.state().strikes)
    }
}

fn recheck_after(strikes: u32) -> Duration {
    PAUSE_RECHECK
        .saturating_mul(2u32.saturating_pow(strikes.min(16)))
        .min(PAUSE_RECHECK_MAX)
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

    /// How long a worker waits, paused, before it calls [`Delivery::check`] again.
    fn recheck_in(&self) -> Duration {
        PAUSE_RECHECK
    }

    /// How many of the send rate's slots this message takes: one, or one per envelope
    /// recipient where the provider's rate counts recipients (SES: a message to 50 addresses is
    /// 50 of its MaxSendRate), so that `SEND_RATE_PER_SECOND` means what the provider's limit
    /// means.
    fn rate_cost(&self, _email: &lettre::Message) -> u32 {
        1
    }

    /// How many sends the backend takes at once (SMTP: its connections); `None`: no limit of
    /// its own. The worker takes a place among them before a rate-limit slot (see
    /// [`crate::worker::Worker::places`]).
    fn max_in_flight(&self) -> Option<usize> {
        None
    }

    /// Logs a warning when `SEND_RATE_PER_SECOND` (`rate`, `None`: no ceiling) is above what
    /// the provider's account allows. Called once, when a worker starts (only a worker's
    /// permissions reach the provider's account).
    async fn warn_over_limits(&self, _rate: Option<f64>) {}

    fn name(&self) -> &'static str;
}

/// One slot per envelope recipient (To, Cc and Bcc), at least one: the cost of a message where
/// the provider's rate counts recipients (SES, by its API or its SMTP endpoint).
pub(crate) fn recipients_cost(email: &lettre::Message) -> u32 {
    u32::try_from(email.envelope().to().len())
        .unwrap_or(u32::MAX)
        .max(1)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A pause that comes back after each resume, with nothing sent in between, waits twice as
    /// long each time, up to a quarter of an hour; a message sent ends the run of strikes.
    #[test]
    fn repeated_pauses_wait_longer_until_a_message_goes_out() {
        let pause = Pause::default();
        pause.set("smtp", "454 quota");
        assert_eq!(pause.recheck_in(), Duration::from_secs(30));
        let mut waits = Vec::new();
        for _ in 0..7 {
            pause.clear("smtp");
            pause.set("smtp", "454 quota");
            waits.push(pause.recheck_in().as_secs());
        }
        assert_eq!(waits, [60, 120, 240, 480, 900, 900, 900]);
        pause.clear("smtp");
        pause.sent();
        pause.set("smtp", "454 quota");
        assert_eq!(pause.recheck_in(), Duration::from_secs(30));
        // A pause set twice before any resume (two deliveries of one batch) is one strike.
        pause.set("smtp", "454 quota");
        assert_eq!(pause.recheck_in(), Duration::from_secs(30));
        assert_eq!(pause.get().as_deref(), Some("454 quota"));
    }
}
