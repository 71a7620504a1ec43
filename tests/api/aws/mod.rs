//! The AWS backends against the moto server (`moto.rs`), a file per concept: SQS as the queue
//! and at the API (`sqs.rs`), messages due later held for SQS (`scheduling.rs`), cancelling what
//! SQS cannot take back (`cancel.rs`), a message SQS delivers twice (`copies.rs`), the S3
//! archive (`s3.rs`), the API token from SSM (`ssm.rs`), and here the whole pipeline through
//! SQS, SES and S3.

mod cancel;
mod copies;
mod moto;
mod s3;
mod scheduling;
mod sqs;
mod ssm;

use std::time::Duration;

use mailroom::config::RawConfig;
use mailroom::queue::sqs::SqsSettings;
use serde_json::json;

use crate::helpers::{accepted_id, spawn_app_with};
use moto::{Moto, REGION};

fn sqs_settings(url: &str, visibility: Duration) -> SqsSettings {
    SqsSettings {
        queue_url: url.to_string(),
        dlq_url: None,
        visibility,
        wait: Duration::from_secs(1),
        pollers: 2,
    }
}

/// Points a test app at moto: SQS queue `queue_url`, fast long polls.
fn on_aws(raw: &mut RawConfig, moto: &Moto, queue_url: &str) {
    raw.queue_backend = Some("sqs".into());
    raw.sqs_queue_url = Some(queue_url.to_string());
    raw.sqs_wait_time_secs = 1;
    raw.aws_region = Some(REGION.into());
    raw.aws_endpoint_url = Some(moto.endpoint.clone());
}

/// A message posted to the API goes through SQS, out through SES with its headers and every
/// recipient (Bcc too), and into the S3 archive; an unverified sender is dead at once and its
/// copy is in the dead-letter queue.
#[tokio::test]
async fn pipeline_through_sqs_ses_and_s3() {
    let moto = Moto::start().await;
    let (url, dlq) = moto.queue_with_dlq("pipeline", 5, None).await;
    moto.bucket("mail-archive").await;
    moto.verify_sender("shop@example.com").await;
    let app = spawn_app_with(|raw| {
        on_aws(raw, &moto, &url);
        raw.archive_url = Some("s3://mail-archive/archive".into());
        raw.delivery = "ses".into();
        raw.send_rate_per_second = 50.0;
    })
    .await;
    let r = app
        .post_message(
            &json!({
                "from": "Shop <shop@example.com>",
                "to": ["buyer@example.net"],
                "bcc": ["audit@example.org"],
                "subject": "Your receipt",
                "text": "Thanks.",
                "headers": {"X-Campaign": "receipts"},
            }),
            None,
        )
        .await;
    let id = accepted_id(r).await;
    let v = app.dispatch_until(&id, "delivered").await;
    assert!(v["events"].to_string().contains("SES message id"), "{v}");
    let sent = moto.ses_sent().await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let raw = sent[0]["raw_data"].as_str().expect("raw MIME");
    for header in [
        format!("X-Mailroom-Id: {id}"),
        "Subject: Your receipt".into(),
        "From: Shop <shop@example.com>".into(),
        "X-Campaign: receipts".into(),
    ] {
        assert!(raw.contains(&header), "{header} missing from {raw}");
    }
    assert!(
        !raw.contains("audit@example.org"),
        "Bcc is not in the headers"
    );
    let destinations = sent[0]["destinations"].to_string();
    assert!(
        destinations.contains("buyer@example.net") && destinations.contains("audit@example.org"),
        "{destinations}"
    );
    let keys = moto.keys("mail-archive").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("archive/emails/") && keys[0].ends_with(&format!("-{id}.json")));
    let doc = moto.object("mail-archive", &keys[0]).await;
    assert_eq!(doc["outcome"]["status"], "delivered");

    let r = app
        .post_message(
            &json!({"from": "someone@unverified.example", "to": ["x@example.net"], "subject": "s", "text": "t"}),
            None,
        )
        .await;
    let id = accepted_id(r).await;
    let v = app.dispatch_until(&id, "dead").await;
    assert_eq!(v["attempts"], 1, "permanent: no retries");
    assert!(
        v["last_error"]
            .as_str()
            .expect("error")
            .contains("MessageRejected"),
        "{v}"
    );
    let dead = moto.drain(&dlq).await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].0.contains(&id));
}
