//! Where the API token comes from (`API_TOKEN`, `API_TOKEN_FILE`, `SSM_TOKEN_PARAMETER`, or one
//! made at first start), checked once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{ConfigError, RawConfig};

/// The shortest token accepted from any source: a guessable token is refused at start-up.
pub const MIN_TOKEN_CHARS: usize = 16;

#[derive(Debug, Clone)]
pub enum TokenSettings {
    Value(SecretString),
    File(PathBuf),
    /// An SSM SecureString, read again every `ttl`.
    Ssm {
        parameter: String,
        ttl: Duration,
    },
    /// Made at first start and saved in this file.
    Generated(PathBuf),
}

impl RawConfig {
    /// One of the token's sources at most; none: a token made and saved in `data_dir`.
    pub(super) fn token_settings(&self, data_dir: &Path) -> Result<TokenSettings, ConfigError> {
        Ok(
            match (
                &self.api_token,
                &self.api_token_file,
                &self.ssm_token_parameter,
            ) {
                (Some(t), None, None) => {
                    if t.expose_secret().trim().chars().count() < MIN_TOKEN_CHARS {
                        return Err(ConfigError::invalid(
                            "API_TOKEN",
                            "[redacted]",
                            format!("must be at least {MIN_TOKEN_CHARS} characters"),
                        ));
                    }
                    TokenSettings::Value(t.clone())
                }
                (None, Some(f), None) => TokenSettings::File(f.clone()),
                (None, None, Some(p)) => {
                    if self.ssm_token_ttl_secs == 0 {
                        return Err(ConfigError::invalid(
                            "SSM_TOKEN_TTL_SECS",
                            0,
                            "expected 1 or more seconds between reads of the token",
                        ));
                    }
                    TokenSettings::Ssm {
                        parameter: p.clone(),
                        ttl: Duration::from_secs(self.ssm_token_ttl_secs),
                    }
                }
                (None, None, None) => TokenSettings::Generated(data_dir.join("token")),
                _ => {
                    return Err(ConfigError::Source(
                        "Set only one of API_TOKEN, API_TOKEN_FILE and SSM_TOKEN_PARAMETER.".into(),
                    ));
                }
            },
        )
    }
}
