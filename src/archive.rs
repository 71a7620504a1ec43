//! The archive: one JSON object per message at [`Message::archive_key`], through `object_store`
//! (a local directory, or S3 with the `s3` feature).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Serialize;

use crate::config::S3Settings;
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
    pub fn from_url(url: &url::Url, s3: &S3Settings) -> Result<Self, ArchiveError> {
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
            #[cfg(feature = "s3")]
            "s3" => Ok(Self::new(s3_store(url, s3)?)),
            other => {
                let _ = s3;
                Err(ArchiveError::Config(format!(
                    "ARCHIVE_URL scheme {other}:// needs a build with its feature (s3)"
                )))
            }
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

/// `s3://bucket/prefix`: credentials and region from the standard AWS variables; path-style
/// requests (what S3-compatible servers expect), plain HTTP only when the endpoint says so.
#[cfg(feature = "s3")]
fn s3_store(url: &url::Url, s3: &S3Settings) -> Result<Arc<dyn ObjectStore>, ArchiveError> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::prefix::PrefixStore;

    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| ArchiveError::Config(format!("{url} names no bucket")))?;
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(region) = &s3.region {
        builder = builder.with_region(region);
    }
    if let Some(endpoint) = &s3.endpoint_url {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    let config = |key: &str| -> Result<AmazonS3ConfigKey, ArchiveError> {
        key.parse()
            .map_err(|e| ArchiveError::Config(format!("{key}: {e}")))
    };
    if let Some(sse) = &s3.server_side_encryption {
        builder = builder.with_config(config("aws_server_side_encryption")?, sse);
    }
    if let Some(key_id) = &s3.kms_key_id {
        builder = builder.with_config(config("aws_sse_kms_key_id")?, key_id);
    }
    let store = builder.build()?;
    let prefix = url.path().trim_matches('/');
    Ok(if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    })
}
