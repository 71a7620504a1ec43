//! The API token from SSM Parameter Store (`SSM_TOKEN_PARAMETER`, a SecureString, decrypted).
//!
//! Read once at start-up (a failure stops start-up: there is no token to check against), then
//! again every `SSM_TOKEN_TTL_SECS` in the background, so a rotated token is picked up without
//! a restart and no request with a known token waits on SSM. When SSM cannot be reached the last token read keeps
//! working; `/ready` reports the outage and `mailroom_token_source_up` drops to 0.
//!
//! A rotation reaches each replica at its own moment, and clients switch over at theirs: for
//! two TTLs after a replica sees a new token, the one it replaced is accepted too, and a token
//! it does not know makes it read SSM again (at most once every [`RECHECK_EVERY`], or TTL if
//! shorter), so neither a client still on the old token nor one already on the new one is
//! refused meanwhile.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ssm::Client;
use secrecy::SecretString;

use super::{AuthError, StaticToken, TokenVerifier};

/// How often an unknown token may make a replica read SSM again, at most.
const RECHECK_EVERY: Duration = Duration::from_secs(10);

/// How long a request with an unknown token waits for such a read.
const RECHECK_WAIT: Duration = Duration::from_secs(5);

pub struct SsmToken {
    client: Client,
    parameter: String,
    current: RwLock<StaticToken>,
    /// The token the current one replaced, accepted until this time.
    previous: RwLock<Option<(StaticToken, Instant)>>,
    /// How long a replaced token is accepted: two TTLs.
    grace: Duration,
    /// When an unknown token last made this replica read SSM; one such read at a time, at most
    /// every `recheck_every`.
    rechecked: tokio::sync::Mutex<Option<Instant>>,
    recheck_every: Duration,
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
            previous: RwLock::new(None),
            grace: ttl * 2,
            rechecked: tokio::sync::Mutex::new(None),
            recheck_every: ttl.min(RECHECK_EVERY),
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
                let fresh = StaticToken::new(&token);
                let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
                if !current.matches(secrecy::ExposeSecret::expose_secret(&token)) {
                    let replaced = std::mem::replace(&mut *current, fresh);
                    *self.previous.write().unwrap_or_else(|p| p.into_inner()) =
                        Some((replaced, Instant::now() + self.grace));
                    tracing::info!(parameter = %self.parameter, "API token rotated; the previous one is accepted for {:?} more.", self.grace);
                }
                drop(current);
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

impl SsmToken {
    /// The current token, or the one it replaced within its grace; both compared, in constant
    /// time, whichever matches.
    fn known(&self, presented: &str) -> bool {
        let current = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .matches(presented);
        let previous = match &*self.previous.read().unwrap_or_else(|p| p.into_inner()) {
            Some((token, until)) => token.matches(presented) && Instant::now() < *until,
            None => false,
        };
        current | previous
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
            AuthError::Unavailable(format!("SSM {parameter}: {}", crate::aws::explain(&e)))
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
        if self.known(presented) {
            return Ok(true);
        }
        // Maybe a token this replica has not read yet: read SSM again, once at a time and at
        // most every `recheck_every`, so that wrong tokens cannot make it hammer SSM. Requests
        // that come while a read is in flight wait for it (the clients that switched to the new
        // token arrive together) and look again at what it found.
        // The wait is bounded: SSM that is slow to answer holds the read for up to its
        // operation timeout, and the requests behind it are answered as below meanwhile.
        if let Ok(mut last) = tokio::time::timeout(RECHECK_WAIT, self.rechecked.lock()).await {
            if self.known(presented) {
                return Ok(true);
            }
            if last.is_none_or(|t| t.elapsed() >= self.recheck_every) {
                self.refresh().await;
                // Stamped when the read ends: a read as slow as the interval must not let the
                // next waiter start another at once.
                *last = Some(Instant::now());
                if self.known(presented) {
                    return Ok(true);
                }
            }
        }
        // Unknown, and SSM could not be read just now: the token may be the new one, so the
        // client is told to try again (503) rather than that its token is wrong.
        match self.health() {
            Ok(()) => Ok(false),
            Err(e) => Err(AuthError::Unavailable(e)),
        }
    }

    fn health(&self) -> Result<(), String> {
        match &*self.last_error.read().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(e) => Err(format!("using the cached token: {e}")),
        }
    }
}
