//! The archive suite on S3.

use mailroom::archive::Archive;
use mailroom::config::S3Settings;

use super::moto::{Moto, REGION};
use crate::conformance::archive_suite;

/// The archive suite passes on S3, under a prefix, with server-side encryption requested.
#[tokio::test]
async fn s3_archive_conformance() {
    let moto = Moto::start().await;
    moto.bucket("archive").await;
    let url = url::Url::parse("s3://archive/mail/prod").expect("URL");
    let s3 = S3Settings {
        region: Some(REGION.into()),
        endpoint_url: Some(moto.endpoint.clone()),
        server_side_encryption: Some("AES256".into()),
        kms_key_id: None,
    };
    archive_suite(&Archive::from_url(&url, &s3).expect("archive")).await;
    let keys = moto.keys("archive").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("mail/prod/emails/2023/11/14/email-1700000000-"),
        "{keys:?}"
    );
}
