//! The API token from SSM Parameter Store (`SSM_TOKEN_PARAMETER`, a SecureString, decrypted).
//!
//! Read once at start-up (a failure stops start-up: there is no token to check against), then
//! again every `SSM_TOKEN_TTL_SECS` in the background, so a rotated token is picked up without
//! a restart and no request waits on SSM. When SSM cannot be reached the last token read keeps
//! working; `/ready` reports the outage and `mailroom_token_source_up` drops to 0.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ssm::Client;
use aws_sdk_ssm::error::DisplayErrorContext;
use secrecy::SecretString;

use super::{AuthError, StaticToken, TokenVerifier};

pub struct SsmToken {
    client: Client,
    parameter: String,
    current: RwLock<StaticToken>,
    /// Why the last read failed; `None` after a good read.
    last_error: RwLock<Option<String>>,
}

impl SsmToken {
    /// Reads the token, then keeps re-reading it every `ttl` while the returned value lives.
    pub async fn start(
        client: Client,
        parameter: String,
        ttl: Duration,
    ) -> Result<Arc<Self>, AuthError> {
        let token = read(&client, &parameter).await?;
        metrics::gauge!("mailroom_token_source_up").set(1.0);
        let this = Arc::new(Self {
            client,
            parameter,
            current: RwLock::new(StaticToken::new(&token)),
            last_error: RwLock::new(None),
        });
        let weak = Arc::downgrade(&this);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ttl);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                this.refresh().await;
            }
        });
        Ok(this)
    }

    async fn refresh(&self) {
        match read(&self.client, &self.parameter).await {
            Ok(token) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = StaticToken::new(&token);
                *self.last_error.write().unwrap_or_else(|p| p.into_inner()) = None;
                metrics::gauge!("mailroom_token_source_up").set(1.0);
            }
            Err(e) => {
                tracing::warn!(parameter = %self.parameter, error = %e, "Could not re-read the API token from SSM; the last one read stays in use.");
                *self.last_error.write().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                metrics::gauge!("mailroom_token_source_up").set(0.0);
                metrics::counter!("mailroom_token_refresh_failures_total").increment(1);
            }
        }
    }
}

async fn read(client: &Client, parameter: &str) -> Result<SecretString, AuthError> {
    let out = client
        .get_parameter()
        .name(parameter)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| {
            AuthError::Unavailable(format!("SSM {parameter}: {}", DisplayErrorContext(&e)))
        })?;
    let value = out
        .parameter()
        .and_then(|p| p.value())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| AuthError::Unavailable(format!("SSM {parameter} is empty")))?;
    Ok(SecretString::from(value.to_string()))
}

#[async_trait]
impl TokenVerifier for SsmToken {
    async fn verify(&self, presented: &str) -> Result<bool, AuthError> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        Ok(current.matches(presented))
    }

    fn health(&self) -> Result<(), String> {
        match &*self.last_error.read().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(e) => Err(format!("using the cached token: {e}")),
        }
    }
}
