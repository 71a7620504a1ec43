//! API tokens: where the token comes from, and constant-time verification.

#[cfg(feature = "ssm")]
pub mod ssm;

use std::path::Path;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token source unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    /// True when `presented` is the current token.
    async fn verify(&self, presented: &str) -> Result<bool, AuthError>;

    /// Whether the token's source answers; a cached token may still be in use when it does not.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A token known at start-up (`API_TOKEN`, `API_TOKEN_FILE`, or the generated one).
pub struct StaticToken {
    digest: [u8; 32],
}

impl StaticToken {
    pub fn new(token: &SecretString) -> Self {
        Self {
            digest: Sha256::digest(token.expose_secret().trim().as_bytes()).into(),
        }
    }

    /// Compares SHA-256 digests in constant time, so neither the content nor the length of the
    /// token leaks through timing.
    pub fn matches(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(d.ct_eq(&self.digest))
    }
}

#[async_trait]
impl TokenVerifier for StaticToken {
    async fn verify(&self, presented: &str) -> Result<bool, AuthError> {
        Ok(self.matches(presented))
    }
}

/// Reads a token file, trimming the trailing newline editors add.
pub fn read_token_file(path: &Path) -> std::io::Result<SecretString> {
    let text = std::fs::read_to_string(path)?;
    Ok(SecretString::from(text.trim().to_string()))
}

/// Loads the token saved at `path`, or makes and saves a new one. Returns the token and whether
/// it was made just now.
pub fn load_or_generate(path: &Path) -> std::io::Result<(SecretString, bool)> {
    if path.exists() {
        return Ok((read_token_file(path)?, false));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes: [u8; 32] = rand::random();
    let token = format!("mr_{}", hex::encode(bytes));
    write_private(path, &token)?;
    Ok((SecretString::from(token), true))
}

#[cfg(unix)]
fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{token}")
}

#[cfg(not(unix))]
fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{token}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the exact token verifies; a prefix or a longer string does not.
    #[tokio::test]
    async fn verifies_exact_token_only() {
        let t = StaticToken::new(&SecretString::from("correct-horse-battery"));
        assert!(t.verify("correct-horse-battery").await.expect("ok"));
        for wrong in [
            "",
            "correct",
            "correct-horse-battery-staple",
            "Correct-horse-battery",
        ] {
            assert!(!t.verify(wrong).await.expect("ok"), "{wrong}");
        }
    }

    /// A generated token is saved privately and read back on the next start.
    #[test]
    fn generated_token_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        let (first, made) = load_or_generate(&path).expect("made");
        assert!(made);
        let (second, made) = load_or_generate(&path).expect("read");
        assert!(!made);
        assert_eq!(first.expose_secret(), second.expose_secret());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
