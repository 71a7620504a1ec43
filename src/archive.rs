//! The archive: one JSON object per message at [`Message::archive_key`], through `object_store`
//! (a local directory, or S3 with the `s3` feature).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Serialize;

use crate::message::{Message, Status};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive write failed: {0}")]
    Write(#[from] object_store::Error),
    #[error("archive setting invalid: {0}")]
    Config(String),
}

/// How the message's delivery ended, as recorded in its archive object.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub status: Status,
    pub at: DateTime<Utc>,
    pub attempts: u32,
    pub detail: String,
}

#[derive(Serialize)]
struct Document<'a> {
    #[serde(flatten)]
    message: &'a Message,
    outcome: &'a Outcome,
}

#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    /// Writes in flight at once. A local directory serialises creates and renames on its inode:
    /// hundreds of concurrent writers spend their time spinning on that lock (measured: 80% of
    /// the worker's CPU in the kernel at concurrency 256), so local writes take turns.
    writers: Option<Arc<tokio::sync::Semaphore>>,
}

/// Concurrent writes to a local archive directory.
const LOCAL_WRITERS: usize = 8;

impl Archive {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            writers: None,
        }
    }

    /// Builds the object store for `ARCHIVE_URL`.
    pub fn from_url(url: &url::Url) -> Result<Self, ArchiveError> {
        match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|_| ArchiveError::Config(format!("{url} is not a local path")))?;
                std::fs::create_dir_all(&dir).map_err(|e| {
                    ArchiveError::Config(format!("cannot create {}: {e}", dir.display()))
                })?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
                Ok(Self {
                    writers: Some(Arc::new(tokio::sync::Semaphore::new(LOCAL_WRITERS))),
                    ..Self::new(Arc::new(fs))
                })
            }
            other => Err(ArchiveError::Config(format!(
                "ARCHIVE_URL scheme {other}:// needs a build with its feature (s3)"
            ))),
        }
    }

    /// Writes the message's object; a second write for the same message replaces the first.
    pub async fn put(&self, message: &Message, outcome: &Outcome) -> Result<String, ArchiveError> {
        let key = message.archive_key();
        let body = serde_json::to_vec(&Document { message, outcome })
            .map_err(|e| ArchiveError::Config(format!("cannot encode archive document: {e}")))?;
        let _turn = match &self.writers {
            Some(w) => Some(
                w.acquire()
                    .await
                    .map_err(|_| ArchiveError::Config("the archive is closed".into()))?,
            ),
            None => None,
        };
        self.store
            .put(&Path::from(key.as_str()), PutPayload::from(body))
            .await?;
        Ok(key)
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }
}
