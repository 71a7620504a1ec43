//! What every crash test checks, and the settings every such test's processes share.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use crate::helpers::Relay;
use crate::{Server, archive_objects, received_ids};

/// Settings for processes that send compat messages to `smtp_url` (the relay, or a forwarder in
/// front of it) for `rcpt`, with short SMTP timeouts; callers add the rate, leases and concurrency.
pub fn smtp_env(smtp_url: String, token: &str, rcpt: &str) -> Vec<(&'static str, String)> {
    vec![
        ("API_TOKEN", token.to_string()),
        ("DELIVERY", "smtp".into()),
        ("SMTP_URL", smtp_url),
        ("SMTP_TIMEOUT_SECS", "2".into()),
        ("COMPAT_RECIPIENT", rcpt.to_string()),
        ("DEFAULT_FROM", "noreply@example.com".into()),
    ]
}

/// Waits until the relay has received every id; returns how many times it received each.
pub async fn wait_all_received(
    relay: &Relay,
    rcpt: &str,
    ids: &[String],
    limit: Duration,
) -> HashMap<String, usize> {
    let want: HashSet<&String> = ids.iter().collect();
    let deadline = Instant::now() + limit;
    loop {
        let got = received_ids(relay, rcpt);
        if want.iter().all(|id| got.contains_key(*id)) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} accepted messages delivered within {limit:?}",
            want.iter().filter(|id| got.contains_key(**id)).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How long the checks below wait for stragglers: a message delivered just before a kill but not
/// yet recorded is delivered again only when its lease (a few seconds in these tests) runs out,
/// possibly after the relay already holds every id.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// Every id reaches status `delivered` in the store, as `GET /v1/messages/{id}` reports it.
pub async fn assert_recorded_delivered(api: &str, token: &str, ids: &[String]) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut waiting: Vec<String> = ids.to_vec();
    loop {
        let statuses: Vec<(String, Value)> = futures::stream::iter(waiting.iter().cloned())
            .map(|id| {
                let req = http
                    .get(format!("{api}/v1/messages/{id}"))
                    .bearer_auth(token);
                async move {
                    let v: Value = req.send().await.expect("sent").json().await.expect("JSON");
                    (id, v["status"].clone())
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let wrong: Vec<_> = statuses
            .into_iter()
            .filter(|(_, s)| s != "delivered")
            .collect();
        if wrong.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} not recorded delivered within {SETTLE_LIMIT:?}, e.g. {:?}",
            wrong.len(),
            ids.len(),
            &wrong[..wrong.len().min(3)]
        );
        waiting = wrong.into_iter().map(|(id, _)| id).collect();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Exactly one archive object per accepted id (the archive key ends in `-{id}.json`); a missing
/// one is waited for (it is written just after the delivery is recorded), a second never is.
pub async fn assert_one_archive_object_each(archive: &Path, ids: &[String]) {
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        let mut objects = Vec::new();
        archive_objects(archive, &mut objects);
        let mut per_id: HashMap<&str, usize> = HashMap::new();
        for name in &objects {
            if let Some(id) = name
                .strip_suffix(".json")
                .and_then(|s| s.get(s.len().saturating_sub(36)..))
            {
                *per_id.entry(id).or_default() += 1;
            }
        }
        let wrong: Vec<_> = ids
            .iter()
            .filter(|id| per_id.get(id.as_str()).copied() != Some(1))
            .map(|id| (id, per_id.get(id.as_str()).copied().unwrap_or(0)))
            .collect();
        let only_missing = wrong.iter().all(|(_, n)| *n == 0);
        if wrong.is_empty() {
            return;
        }
        assert!(
            only_missing && Instant::now() < deadline,
            "{} of {} accepted messages do not have exactly one archive object, e.g. {:?}",
            wrong.len(),
            ids.len(),
            &wrong[..wrong.len().min(3)]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn kill_9(server: &mut tokio::process::Child) {
    server.start_kill().expect("SIGKILL is sent");
    server.wait().await.expect("the process is reaped");
}

/// The value of one unlabelled-or-labelled series in Prometheus text (`name{labels} value`).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(name, _)| {
            // Series carry extra labels (instance_id): match the name and each wanted label.
            let (want_name, want_labels) = series.split_once('{').unwrap_or((series, ""));
            let (got_name, got_labels) = name.split_once('{').unwrap_or((name, ""));
            got_name == want_name
                && want_labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .all(|l| got_labels.contains(l))
        })
        .map(|(_, v)| v.parse::<f64>().expect("a number"))
        .sum()
}

/// The server's `/metrics` page.
pub async fn metrics_text(server: &Server) -> String {
    reqwest::get(format!("{}/metrics", server.url))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("text")
}
