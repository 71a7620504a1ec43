//! A worker alone: its port, its health check, its metrics.

use super::{cli, hangup};

/// A worker alone serves `/health` and `/metrics` on PORT (it has no API there), so container
/// health checks and Prometheus reach every role; `mailroom healthcheck` probes it, and with
/// METRICS_PORT set probes that port instead, where every role answers `/health` too. A worker
/// whose PORT is taken still works, and a SIGHUP does not end a worker.
#[tokio::test]
async fn a_worker_alone_answers_health_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let env = [("DELIVERY", "none".to_string())];
    let mut worker = crate::start_role("worker", d, &env).await;
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/health", worker.url))
        .send()
        .await
        .expect("the worker answers");
    assert_eq!(health.status(), 200);
    // The gauges are set by a task that starts beside the server: give it a moment.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = http
            .get(format!("{}/metrics", worker.url))
            .send()
            .await
            .expect("the worker answers")
            .text()
            .await
            .expect("text");
        if metrics.contains("mailroom_rate_limit_per_second") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("mailroom_rate_limit_per_second"),
        "{metrics}"
    );
    // What this port does not serve is a JSON error, as on the API's port.
    for (method, path, status) in [
        (reqwest::Method::GET, "/ready", 404),
        (reqwest::Method::POST, "/v1/messages", 404),
        (reqwest::Method::POST, "/health", 405),
    ] {
        let r = http
            .request(method, format!("{}{path}", worker.url))
            .send()
            .await
            .expect("the worker answers");
        assert_eq!(r.status(), status, "{path}");
        let body: serde_json::Value = r.json().await.expect("a JSON error");
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
    }
    // Series of rare events are there from the start, at zero, for dashboards and rate().
    for (name, label) in [
        ("mailroom_archive_failures_total", ""),
        ("mailroom_redrives_total", ""),
        ("mailroom_delivery_paused", ""),
        ("mailroom_deliveries_total", "outcome=\"dead\""),
    ] {
        let at_zero = metrics.lines().any(|l| {
            l.starts_with(name)
                && l.contains(label)
                && l.rsplit_once(' ').is_some_and(|(_, v)| v == "0")
        });
        assert!(at_zero, "{name} {label} at 0 in {metrics}");
    }
    let port = worker.url.rsplit(':').next().expect("a port").to_string();
    let (ok, _, err) = cli(d, &[("PORT", &port)], &["healthcheck"]).await;
    assert!(ok, "healthcheck on PORT: {err}");
    // Secrets written as references are not read for a probe (the container's settings on AWS;
    // every probe would otherwise call SSM, and fail with it): here SSM cannot be reached.
    let references = [
        ("PORT", port.as_str()),
        ("DATABASE_URL", "ssm:/mailroom/test/database-url"),
        ("API_TOKEN", "secretsmanager:mailroom/test/token"),
        // A number setting too, which would not parse unresolved.
        ("SEND_RATE_PER_SECOND", "ssm:/mailroom/test/rate"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
    ];
    let (ok, _, err) = cli(d, &references, &["healthcheck"]).await;
    assert!(ok, "healthcheck with secret references: {err}");
    // An address given as the URL the server printed is taken too.
    let (ok, _, err) = cli(d, &[], &["healthcheck", "--addr", &worker.url]).await;
    assert!(ok, "healthcheck --addr {}: {err}", worker.url);
    // With METRICS_PORT set, the health check goes there (here: to the same worker), not to PORT.
    let (ok, _, err) = cli(
        d,
        &[("PORT", "1"), ("METRICS_PORT", &port)],
        &["healthcheck"],
    )
    .await;
    assert!(ok, "healthcheck on METRICS_PORT: {err}");
    // SIGHUP reloads what an API has; a worker has nothing to reload and keeps running.
    hangup(worker.child.id().expect("running"));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        worker.child.try_wait().expect("status").is_none(),
        "a worker keeps running after SIGHUP"
    );
    let (ok, _, err) = cli(d, &[("PORT", &port)], &["healthcheck"]).await;
    assert!(ok, "healthcheck after SIGHUP: {err}");
    // A second worker whose PORT is taken (as beside an api on one machine) runs without them.
    let other = tempfile::tempdir().expect("tempdir");
    let mut second = crate::spawn("worker", other.path(), &[("PORT", port.clone())]);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        second.try_wait().expect("status").is_none(),
        "a worker whose PORT is taken keeps running"
    );
    second.kill().await.expect("kill");
    worker.child.kill().await.expect("kill");
    let (ok, _, _) = cli(d, &[("PORT", &port)], &["healthcheck"]).await;
    assert!(!ok, "nothing answers once the worker is gone");
}
