//! Where messages are archived (`ARCHIVE_URL`, `S3_BUCKET_NAME`, the S3 encryption settings),
//! checked once.

use std::path::{Path, PathBuf};

use super::{ConfigError, RawConfig};

/// The S3 archive's connection and server-side encryption.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// `AES256`, `aws:kms` or `aws:kms:dsse`; `None`: the bucket's default.
    pub server_side_encryption: Option<String>,
    pub kms_key_id: Option<String>,
}

impl RawConfig {
    /// The archive's URL; `None` for `ARCHIVE_URL=none`. The default is `DATA_DIR/archive`.
    pub(super) fn archive_url(&self, data_dir: &Path) -> Result<Option<url::Url>, ConfigError> {
        let url = match (&self.archive_url, &self.s3_bucket_name) {
            (Some(u), _) if u == "none" => None,
            (Some(u), _) => Some(parse_archive_url(u)?),
            (None, Some(bucket)) => Some(s3_bucket_url(bucket)?),
            (None, None) => Some(
                url::Url::from_directory_path(absolute(&data_dir.join("archive"))).map_err(
                    |_| {
                        ConfigError::invalid(
                            "DATA_DIR",
                            data_dir.display(),
                            "expected a directory path",
                        )
                    },
                )?,
            ),
        };
        if let Some(sse) = &self.s3_server_side_encryption
            && !matches!(sse.as_str(), "AES256" | "aws:kms" | "aws:kms:dsse")
        {
            return Err(ConfigError::invalid(
                "S3_SERVER_SIDE_ENCRYPTION",
                sse,
                "expected AES256, aws:kms or aws:kms:dsse",
            ));
        }
        Ok(url)
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn parse_archive_url(value: &str) -> Result<url::Url, ConfigError> {
    let accepted = "expected file:///absolute/dir, s3://bucket/prefix or none";
    let url = if value.starts_with('/') || value.starts_with('.') {
        url::Url::from_directory_path(absolute(Path::new(value)))
            .map_err(|_| ConfigError::invalid("ARCHIVE_URL", value, accepted))?
    } else {
        url::Url::parse(value).map_err(|_| ConfigError::invalid("ARCHIVE_URL", value, accepted))?
    };
    match url.scheme() {
        // `file://relative/dir` names a host, not a directory.
        "file" if url.to_file_path().is_err() => {
            Err(ConfigError::invalid("ARCHIVE_URL", value, accepted))
        }
        "file" | "s3" => Ok(url),
        _ => Err(ConfigError::invalid("ARCHIVE_URL", value, accepted)),
    }
}

/// `S3_BUCKET_NAME` as an archive URL: a bucket name, optionally followed by `/prefix`. Checked
/// here, where the error can name the variable the user set: a value such as `s3://bucket`
/// would otherwise parse as a URL to a bucket called `s3`. Names S3 no longer lets anyone create
/// (capitals, underscores) are still taken: old buckets keep them.
fn s3_bucket_url(value: &str) -> Result<url::Url, ConfigError> {
    let bucket = value.split('/').next().unwrap_or_default();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/');
    if bucket.is_empty() || !value.chars().all(allowed) {
        return Err(ConfigError::invalid(
            "S3_BUCKET_NAME",
            value,
            "expected a bucket name such as mail-archive, optionally followed by /prefix",
        ));
    }
    parse_archive_url(&format!("s3://{value}"))
}
