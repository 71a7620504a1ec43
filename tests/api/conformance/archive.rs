//! The archive suite, and its run on the local directory.

use mailroom::archive::{Archive, Outcome};
use mailroom::message::Status;
use object_store::{ObjectStoreExt, path::Path};

use super::message;

/// The archive writes JSON at the message's key, and a second write replaces the first.
pub async fn archive_suite(archive: &Archive) {
    let m = message(1);
    let outcome = |status| Outcome {
        status,
        at: chrono::Utc::now(),
        attempts: 1,
        detail: "x".into(),
    };
    let key = archive.put(&m, &outcome(Status::Dead)).await.expect("put");
    assert_eq!(key, m.archive_key());
    archive
        .put(&m, &outcome(Status::Delivered))
        .await
        .expect("second put");
    let store = archive.object_store();
    let listed: Vec<_> =
        futures::StreamExt::collect::<Vec<_>>(store.list(Some(&Path::from("emails/2023/11/14"))))
            .await;
    let mine: Vec<_> = listed
        .into_iter()
        .map(|r| r.expect("list"))
        .filter(|o| o.location.as_ref().contains(&m.id.to_string()))
        .collect();
    assert_eq!(mine.len(), 1, "one object per message");
    let bytes = store
        .get(&Path::from(key.as_str()))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(
        doc["outcome"]["status"], "delivered",
        "the second write won"
    );
    assert_eq!(doc["id"], m.id.to_string());
    assert_eq!(doc["email_subject"], "conformance 1");
}

/// The local-directory archive passes the archive suite.
#[tokio::test]
async fn local_archive_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url::Url::from_directory_path(dir.path()).expect("absolute");
    archive_suite(&Archive::from_url(&url, &Default::default()).expect("archive")).await;
}
