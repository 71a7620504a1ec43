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
    let app = app_with_ssm_token(&moto, "api-token", "first-token-value", 1).await;
    assert_eq!(status(&app, "first-token-value").await, 200);
    assert_eq!(status(&app, "second-token-value").await, 401);
    moto.put_parameter("/mailroom/test/api-token", "second-token-value")
        .await;
    // The replaced token is accepted for two TTLs after the replica saw the new one (within
    // one TTL), then refused.
    tokio::time::sleep(Duration::from_millis(3500)).await;
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
    // A token the replica does not know, while SSM cannot be read, may be the new one: the
    // client is told to try again, not that its token is wrong.
    let r = app
        .client
        .get(app.url("/v1/messages"))
        .bearer_auth("third-token-value")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
}

/// A rotation as clients live it: a client already on the new token is accepted at once (an
/// unknown token makes the replica read SSM again, without waiting for its TTL of 5 minutes),
/// and one still on the old token too, for two TTLs; a wrong token stays refused.
#[tokio::test]
async fn a_rotated_token_is_accepted_at_once_and_the_old_one_for_a_while() {
    let moto = Moto::start().await;
    let app = app_with_ssm_token(&moto, "rotation", "old-token-value", 300).await;
    assert_eq!(status(&app, "old-token-value").await, 200);
    moto.put_parameter("/mailroom/test/rotation", "new-token-value")
        .await;
    assert_eq!(status(&app, "new-token-value").await, 200, "read at once");
    assert_eq!(status(&app, "old-token-value").await, 200, "still accepted");
    assert_eq!(status(&app, "wrong-token-value").await, 401);
}

/// The clients that switched to a rotated token arrive together: every one of them is accepted,
/// not only the one whose request made the replica read SSM (the others waited for that read).
#[tokio::test]
async fn clients_switching_together_to_a_rotated_token_are_all_accepted() {
    let moto = Moto::start().await;
    let app = app_with_ssm_token(&moto, "together", "old-token-value", 300).await;
    moto.put_parameter("/mailroom/test/together", "new-token-value")
        .await;
    let statuses =
        futures::future::join_all((0..20).map(|_| status(&app, "new-token-value"))).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

/// An app whose API token is the SSM parameter `/mailroom/test/{name}`, first set to `token`,
/// re-read every `ttl_secs`.
async fn app_with_ssm_token(moto: &Moto, name: &str, token: &str, ttl_secs: u64) -> TestApp {
    let (url, _) = moto.queue_with_dlq(name, 5, None).await;
    let parameter = format!("/mailroom/test/{name}");
    moto.put_parameter(&parameter, token).await;
    spawn_app_with(|raw| {
        on_aws(raw, moto, &url);
        raw.api_token = None;
        raw.ssm_token_parameter = Some(parameter.clone());
        raw.ssm_token_ttl_secs = ttl_secs;
    })
    .await
}

/// The status `GET /v1/messages` answers with this bearer token.
async fn status(app: &TestApp, token: &str) -> u16 {
    let req = app.client.get(app.url("/v1/messages")).bearer_auth(token);
    req.send().await.expect("sent").status().as_u16()
}
