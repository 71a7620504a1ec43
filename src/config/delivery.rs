//! How messages leave (`DELIVERY`: file, smtp, ses, none), checked once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{ConfigError, RawConfig};

#[derive(Debug, Clone)]
pub enum DeliverySettings {
    /// `.eml` files in `DATA_DIR/outbox`.
    File {
        dir: PathBuf,
    },
    Smtp {
        url: SecretString,
        timeout: Duration,
    },
    Ses,
    None,
}

impl DeliverySettings {
    pub fn name(&self) -> &'static str {
        match self {
            Self::File { .. } => "file",
            Self::Smtp { .. } => "smtp",
            Self::Ses => "ses",
            Self::None => "none",
        }
    }
}

impl RawConfig {
    pub(super) fn delivery_settings(
        &self,
        data_dir: &Path,
    ) -> Result<DeliverySettings, ConfigError> {
        // Only an SMTP relay is bound by it: with another delivery, a short visibility timeout
        // is not refused for the sake of a default that is never used.
        let smtp = self.delivery == "smtp";
        if self.smtp_timeout_secs == 0
            || (smtp && self.smtp_timeout_secs >= self.visibility_timeout_secs)
        {
            return Err(ConfigError::invalid(
                "SMTP_TIMEOUT_SECS",
                self.smtp_timeout_secs,
                format!(
                    "expected at least 1 and less than VISIBILITY_TIMEOUT_SECS ({}), so that a lease outlives any one step the relay is slow to answer",
                    self.visibility_timeout_secs
                ),
            ));
        }
        Ok(match self.delivery.as_str() {
            "file" => DeliverySettings::File {
                dir: data_dir.join("outbox"),
            },
            "smtp" => {
                let url = self.smtp_url.clone().ok_or(ConfigError::Missing {
                    var: "SMTP_URL",
                    why: "when DELIVERY=smtp",
                })?;
                crate::delivery::smtp::check_url(url.expose_secret())
                    .map_err(|why| ConfigError::invalid("SMTP_URL", "[redacted]", why))?;
                DeliverySettings::Smtp {
                    url,
                    timeout: Duration::from_secs(self.smtp_timeout_secs),
                }
            }
            "ses" => DeliverySettings::Ses,
            "none" => DeliverySettings::None,
            other => {
                return Err(ConfigError::invalid(
                    "DELIVERY",
                    other,
                    "expected one of file, smtp, ses, none",
                ));
            }
        })
    }
}
