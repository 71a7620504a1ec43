//! Amazon SES v2 (`DELIVERY=ses`): the raw MIME message built by the same code as SMTP, sent with
//! `SendEmail`, to every envelope recipient (Bcc included, though it is not in the headers).
//!
//! What SES answers decides the message's fate: throttling ("Maximum sending rate exceeded") is
//! retried and slows the limiter; a rejected message or an unverified sender is permanent; an
//! account whose sending is paused stops delivery without using up attempts, fails `/ready`,
//! and is checked again by the worker every 30 s until sending resumes. An exhausted daily quota
//! is treated the same way: retrying within the day cannot help.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};

use super::{Delivery, DeliveryError, Receipt};

pub struct SesDelivery {
    client: Client,
    configuration_set: Option<String>,
    paused: AtomicBool,
    pause_reason: Mutex<String>,
}

/// The account's sending limits, as `GetAccount` reports them.
#[derive(Debug, Clone, Copy)]
pub struct SendQuota {
    pub max_send_rate: f64,
    pub max_24_hour_send: f64,
    pub sending_enabled: bool,
}

impl SesDelivery {
    pub fn new(client: Client, configuration_set: Option<String>) -> Self {
        Self {
            client,
            configuration_set,
            paused: AtomicBool::new(false),
            pause_reason: Mutex::new(String::new()),
        }
    }

    /// Reads the account's send quota and whether sending is enabled.
    pub async fn quota(&self) -> Result<SendQuota, String> {
        let account = self
            .client
            .get_account()
            .send()
            .await
            .map_err(|e| format!("SES GetAccount: {}", DisplayErrorContext(&e)))?;
        let q = account.send_quota();
        Ok(SendQuota {
            max_send_rate: q.map(|q| q.max_send_rate()).unwrap_or_default(),
            max_24_hour_send: q.map(|q| q.max24_hour_send()).unwrap_or_default(),
            sending_enabled: account.sending_enabled(),
        })
    }

    fn pause(&self, reason: &str) {
        if !self.paused.swap(true, Ordering::SeqCst) {
            tracing::error!(
                reason,
                "SES sending is paused for this account; delivery stops until it resumes."
            );
        }
        *self.pause_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_string();
        metrics::gauge!("mailroom_delivery_paused").set(1.0);
    }
}

/// Decides what an SES error means for the message.
pub fn classify(code: &str, message: &str) -> DeliveryError {
    let text = format!("SES {code}: {message}");
    let lower = message.to_ascii_lowercase();
    if lower.contains("daily message quota exceeded") {
        // SES sends this as a throttle, but retrying soon cannot help and would use up every
        // message's attempts: stop sending, without counting attempts, until the quota is back.
        return DeliveryError::Paused(text);
    }
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
        _ => DeliveryError::Temporary(format!("SES: {}", DisplayErrorContext(&e))),
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
            Ok(out) => Ok(Receipt {
                detail: format!("SES message id {}", out.message_id().unwrap_or("unknown")),
            }),
            Err(e) => {
                let error = sdk_error(e);
                if let DeliveryError::Paused(reason) = &error {
                    self.pause(reason);
                }
                Err(error)
            }
        }
    }

    /// Asks SES whether the account may send; a paused account that may send again resumes.
    async fn check(&self) -> Result<(), DeliveryError> {
        let quota = self.quota().await.map_err(DeliveryError::Temporary)?;
        if quota.sending_enabled {
            if self.paused.swap(false, Ordering::SeqCst) {
                tracing::info!("SES sending is enabled again; delivery resumes.");
            }
            metrics::gauge!("mailroom_delivery_paused").set(0.0);
            Ok(())
        } else {
            self.pause("SES reports sending disabled for this account");
            Err(DeliveryError::Paused(
                "SES sending is paused for this account".into(),
            ))
        }
    }

    fn paused(&self) -> Option<String> {
        self.paused.load(Ordering::SeqCst).then(|| {
            self.pause_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    fn name(&self) -> &'static str {
        "ses"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
