//! The API token from SSM: rotation within the TTL, and an outage.

use std::time::Duration;

use serde_json::Value;

use super::moto::Moto;
use super::on_aws;
use crate::helpers::{TestApp, spawn_app_with};

/// The token comes from SSM; a rotation is picked up within the TTL without a restart; when
/// SSM fails, the cached token keeps working and /ready says so.
#[tokio::test]
async fn api_token_from_ssm_rotates_and_survives_an_outage() {
    let moto = Moto::start().await;
    let (url, _) = moto.queue_with_dlq("token", 5, None).await;
    moto.put_parameter("/mailroom/test/api-token", "first-token-value")
        .await;
    let app = spawn_app_with(|raw| {
        on_aws(raw, &moto, &url);
        raw.api_token = None;
        raw.ssm_token_parameter = Some("/mailroom/test/api-token".into());
        raw.ssm_token_ttl_secs = 1;
    })
    .await;
    let status = |app: &TestApp, token: &'static str| {
        let req = app.client.get(app.url("/v1/messages")).bearer_auth(token);
        async move { req.send().await.expect("sent").status().as_u16() }
    };
    assert_eq!(status(&app, "first-token-value").await, 200);
    assert_eq!(status(&app, "second-token-value").await, 401);
    moto.put_parameter("/mailroom/test/api-token", "second-token-value")
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        status(&app, "second-token-value").await,
        200,
        "rotated within the TTL"
    );
    assert_eq!(status(&app, "first-token-value").await, 401);

    moto.ssm()
        .delete_parameter()
        .name("/mailroom/test/api-token")
        .send()
        .await
        .expect("deleted");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        status(&app, "second-token-value").await,
        200,
        "the cached token still works"
    );
    let ready: Value = app.get_public("/ready").await.json().await.expect("JSON");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(
        ready["checks"]["token"]
            .as_str()
            .expect("text")
            .contains("cached"),
        "{ready}"
    );
}
