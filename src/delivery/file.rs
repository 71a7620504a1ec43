//! `DELIVERY=file`: each message as an RFC 5322 `.eml` file in `DATA_DIR/outbox`.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{Delivery, DeliveryError, Receipt};

pub struct FileDelivery {
    dir: PathBuf,
}

impl FileDelivery {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

#[async_trait]
impl Delivery for FileDelivery {
    /// Written under the message's own id (lettre's file transport picks a random name), so a
    /// redelivery rewrites the same file; a temporary name and a rename keep it whole.
    async fn deliver(&self, email: &lettre::Message) -> Result<Receipt, DeliveryError> {
        let id = email
            .headers()
            .get_raw("X-Mailroom-Id")
            .unwrap_or("unknown")
            .to_string();
        let path = self.dir.join(format!("{id}.eml"));
        let tmp = self.dir.join(format!(".{id}.eml.tmp"));
        let io = |e: std::io::Error| DeliveryError::Temporary(format!("outbox write failed: {e}"));
        tokio::fs::create_dir_all(&self.dir).await.map_err(io)?;
        tokio::fs::write(&tmp, email.formatted())
            .await
            .map_err(io)?;
        tokio::fs::rename(&tmp, &path).await.map_err(io)?;
        Ok(Receipt {
            detail: format!("written to {}", path.display()),
        })
    }

    async fn check(&self) -> Result<(), DeliveryError> {
        tokio::fs::create_dir_all(&self.dir).await.map_err(|e| {
            DeliveryError::Temporary(format!("cannot create {}: {e}", self.dir.display()))
        })
    }

    fn name(&self) -> &'static str {
        "file"
    }
}
