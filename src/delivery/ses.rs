//! Amazon SES v2 (`DELIVERY=ses`): the raw MIME message built by the same code as SMTP, sent with
//! `SendEmail`, to every envelope recipient (Bcc included, though it is not in the headers).
//!
//! What SES answers decides the message's fate: throttling ("Maximum sending rate exceeded") is
//! retried and slows the limiter; a rejected message or an unverified sender is permanent; an
//! account whose sending is paused stops delivery without using up attempts (`/ready` reports
//! it), and is checked again by the worker (`GetAccount`) from every 30 s to every 15 minutes
//! until sending resumes. An exhausted daily quota is treated the same way, and the check
//! compares the day's sends with the quota: retrying within the day cannot help.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};

use super::{Delivery, DeliveryError, Pause, Receipt, quota_exhausted, recipients_cost};

pub struct SesDelivery {
    client: Client,
    configuration_set: Option<String>,
    pause: Pause,
}

/// An SES client that makes one attempt per call. The SDK's own retries (three attempts by
/// default, on throttling and on timeouts) would send outside the rate limiter's slots, and
/// keep sending while SES asks to slow down before the limiter hears of it: the worker retries
/// instead, with its backoff, its attempts and a slot each time.
pub fn client(aws: &aws_config::SdkConfig) -> Client {
    let config = aws_sdk_sesv2::config::Builder::from(aws)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

/// The account's sending limits, as `GetAccount` reports them.
#[derive(Debug, Clone, Copy)]
pub struct SendQuota {
    pub max_send_rate: f64,
    /// Messages the account may send in 24 hours; -1: no limit.
    pub max_24_hour_send: f64,
    pub sent_last_24_hours: f64,
    pub sending_enabled: bool,
}

impl SendQuota {
    /// Why the account cannot send now, if it cannot.
    pub fn stopped(&self) -> Option<String> {
        if !self.sending_enabled {
            return Some("SES reports sending disabled for this account".into());
        }
        (self.max_24_hour_send >= 0.0 && self.sent_last_24_hours >= self.max_24_hour_send).then(
            || {
                format!(
                    "SES daily quota used up: {} of {} messages sent in the last 24 hours",
                    self.sent_last_24_hours, self.max_24_hour_send
                )
            },
        )
    }
}

impl SesDelivery {
    pub fn new(client: Client, configuration_set: Option<String>) -> Self {
        Self {
            client,
            configuration_set,
            pause: Pause::default(),
        }
    }

    /// Reads the account's send quota and whether sending is enabled.
    pub async fn quota(&self) -> Result<SendQuota, String> {
        let account = self
            .client
            .get_account()
            .send()
            .await
            .map_err(|e| format!("SES GetAccount: {}", crate::aws::explain(&e)))?;
        let q = account.send_quota();
        Ok(SendQuota {
            max_send_rate: q.map(|q| q.max_send_rate()).unwrap_or_default(),
            // No quota in the answer: nothing to hold the account to.
            max_24_hour_send: q.map_or(-1.0, |q| q.max24_hour_send()),
            sent_last_24_hours: q.map(|q| q.sent_last24_hours()).unwrap_or_default(),
            sending_enabled: account.sending_enabled(),
        })
    }
}

/// Decides what an SES error means for the message.
pub fn classify(code: &str, message: &str) -> DeliveryError {
    let text = format!("SES {code}: {message}");
    if quota_exhausted(message) {
        return DeliveryError::Paused(text);
    }
    let lower = message.to_ascii_lowercase();
    match code {
        "TooManyRequestsException" | "ThrottlingException" | "Throttling" => {
            DeliveryError::Throttled {
                reason: text,
                retry_after: None,
            }
        }
        "SendingPausedException" | "AccountSuspendedException" => DeliveryError::Paused(text),
        _ if lower.contains("maximum sending rate exceeded") => DeliveryError::Throttled {
            reason: text,
            retry_after: None,
        },
        "MessageRejected"
        | "MailFromDomainNotVerifiedException"
        | "BadRequestException"
        | "NotFoundException"
        | "LimitExceededException" => DeliveryError::Permanent(text),
        _ => DeliveryError::Temporary(text),
    }
}

fn sdk_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: SdkError<E>,
) -> DeliveryError {
    match &e {
        SdkError::ServiceError(_) => classify(
            e.code().unwrap_or("Unknown"),
            e.message().unwrap_or_default(),
        ),
        // Timeouts, connection failures, unreadable answers: try again later.
        _ => DeliveryError::Temporary(format!("SES: {}", crate::aws::explain(&e))),
    }
}

#[async_trait]
impl Delivery for SesDelivery {
    async fn deliver(&self, email: &lettre::Message) -> Result<Receipt, DeliveryError> {
        let envelope = email.envelope();
        let from = envelope
            .from()
            .map(ToString::to_string)
            .ok_or_else(|| DeliveryError::Permanent("the message has no sender".into()))?;
        let recipients: Vec<String> = envelope.to().iter().map(ToString::to_string).collect();
        let raw = RawMessage::builder()
            .data(Blob::new(email.formatted()))
            .build()
            .map_err(|e| DeliveryError::Permanent(format!("cannot build the SES message: {e}")))?;
        let sent = self
            .client
            .send_email()
            .from_email_address(from)
            .destination(
                Destination::builder()
                    .set_to_addresses(Some(recipients))
                    .build(),
            )
            .content(EmailContent::builder().raw(raw).build())
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await;
        match sent {
            Ok(out) => {
                self.pause.sent();
                Ok(Receipt {
                    detail: format!("SES message id {}", out.message_id().unwrap_or("unknown")),
                })
            }
            Err(e) => {
                let error = sdk_error(e);
                if let DeliveryError::Paused(reason) = &error {
                    self.pause.set("ses", reason);
                }
                Err(error)
            }
        }
    }

    /// Asks SES whether the account may send (sending enabled, and the day's quota not used
    /// up); a paused account that may send again resumes.
    async fn check(&self) -> Result<(), DeliveryError> {
        let quota = self.quota().await.map_err(DeliveryError::Temporary)?;
        match quota.stopped() {
            None => {
                self.pause.clear("ses");
                Ok(())
            }
            Some(reason) => {
                self.pause.set("ses", &reason);
                Err(DeliveryError::Paused(reason))
            }
        }
    }

    fn paused(&self) -> Option<String> {
        self.pause.get()
    }

    fn recheck_in(&self) -> Duration {
        self.pause.recheck_in()
    }

    /// SES counts every recipient against the account's maximum send rate.
    fn rate_cost(&self, email: &lettre::Message) -> u32 {
        recipients_cost(email)
    }

    /// Reads the account's quota (`ses:GetAccount`) and warns when the configured rate is
    /// above its MaxSendRate.
    async fn warn_over_limits(&self, rate: Option<f64>) {
        match self.quota().await {
            Ok(q) => {
                tracing::info!(
                    max_send_rate = q.max_send_rate,
                    max_24_hour_send = q.max_24_hour_send,
                    sending_enabled = q.sending_enabled,
                    "SES account quota read."
                );
                if rate.is_none_or(|r| r > q.max_send_rate) && q.max_send_rate > 0.0 {
                    tracing::warn!(
                        send_rate_per_second = rate.unwrap_or(f64::INFINITY),
                        max_send_rate = q.max_send_rate,
                        "SEND_RATE_PER_SECOND is above the SES account's MaxSendRate: SES will throttle; set it to at most MaxSendRate."
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "Could not read the SES send quota; SEND_RATE_PER_SECOND is not checked against it.")
            }
        }
    }

    fn name(&self) -> &'static str {
        "ses"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An account may send while sending is enabled and the day's sends are below the quota
    /// (-1: none); the quota used up keeps a paused account paused after `check`.
    #[test]
    fn the_quota_says_when_the_account_cannot_send() {
        let quota = |enabled, max, sent| SendQuota {
            max_send_rate: 14.0,
            max_24_hour_send: max,
            sent_last_24_hours: sent,
            sending_enabled: enabled,
        };
        assert_eq!(quota(true, 50_000.0, 49_999.0).stopped(), None);
        assert_eq!(quota(true, -1.0, 1e9).stopped(), None);
        let used_up = quota(true, 200.0, 200.0).stopped().expect("stopped");
        assert!(used_up.contains("200 of 200"), "{used_up}");
        assert!(quota(false, 200.0, 0.0).stopped().is_some());
    }

    /// SES's rate counts recipients: every envelope recipient (To, Cc and Bcc) takes a slot.
    #[test]
    fn each_recipient_takes_a_slot_of_the_send_rate() {
        let email = lettre::Message::builder()
            .from("a@example.com".parse().expect("address"))
            .to("b@example.com".parse().expect("address"))
            .cc("c@example.com".parse().expect("address"))
            .bcc("d@example.com".parse().expect("address"))
            .subject("s")
            .body(String::from("t"))
            .expect("builds");
        assert_eq!(recipients_cost(&email), 3);
    }

    /// One attempt per call: a retry is the worker's, through the rate limiter.
    #[test]
    fn the_client_does_not_retry_on_its_own() {
        let aws = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let retry = client(&aws).config().retry_config().cloned();
        assert_eq!(retry.map(|r| r.max_attempts()), Some(1));
    }

    /// The SES answers a sender meets, and what each means for the message.
    #[test]
    fn ses_errors_carry_their_decision() {
        let cases = [
            (
                "TooManyRequestsException",
                "Maximum sending rate exceeded.",
                "throttled",
            ),
            ("Throttling", "Maximum sending rate exceeded.", "throttled"),
            ("Throttling", "Daily message quota exceeded.", "paused"),
            (
                "TooManyRequestsException",
                "Daily message quota exceeded.",
                "paused",
            ),
            (
                "SendingPausedException",
                "Sending is paused for this account.",
                "paused",
            ),
            ("AccountSuspendedException", "suspended", "paused"),
            (
                "MessageRejected",
                "Email address is not verified.",
                "permanent",
            ),
            (
                "MailFromDomainNotVerifiedException",
                "not verified",
                "permanent",
            ),
            (
                "NotFoundException",
                "configuration set does not exist",
                "permanent",
            ),
            ("InternalFailure", "oops", "temporary"),
        ];
        for (code, message, expected) in cases {
            let got = match classify(code, message) {
                DeliveryError::Throttled { .. } => "throttled",
                DeliveryError::Paused(_) => "paused",
                DeliveryError::Permanent(_) => "permanent",
                DeliveryError::Temporary(_) => "temporary",
            };
            assert_eq!(got, expected, "{code}: {message}");
        }
    }
}
