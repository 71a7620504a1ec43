//! Shared test setup: an app on port 0 with its own data directory, a client with one method per
//! endpoint, a worker driven step by step, and the real SMTP relay that `scripts/test` starts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mailroom::config::RawConfig;
use mailroom::startup::{Application, Roles};
use mailroom::worker::Worker;
use reqwest::Response;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test, which starts the servers")
    })
}

/// The aiosmtpd relay started by `scripts/test`.
#[derive(Clone)]
pub struct Relay {
    pub port: u16,
    pub tls_port: u16,
    pub smtps_port: u16,
    pub user: String,
    pub password: String,
    pub ca: String,
    pub sink: PathBuf,
}

/// One message as the relay received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// When the relay wrote it (nanoseconds since the epoch, from the file name).
    pub received_ns: u128,
    pub rcpt_tos: Vec<String>,
    pub mail_from: String,
    pub login: Option<String>,
    /// The client's port of the connection it came on.
    pub peer_port: Option<u64>,
    pub raw: String,
}

impl Received {
    /// The value of the first header with this name (unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with(' ') || line.starts_with('\t') {
                    v.push_str(line.trim_start());
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_string());
            }
        }
        value
    }
}

impl Relay {
    pub fn from_env() -> Self {
        Self {
            port: env("MAILROOM_TEST_SMTP_PORT").parse().expect("a port"),
            tls_port: env("MAILROOM_TEST_SMTP_TLS_PORT").parse().expect("a port"),
            smtps_port: env("MAILROOM_TEST_SMTPS_PORT").parse().expect("a port"),
            user: env("MAILROOM_TEST_SMTP_USER"),
            password: env("MAILROOM_TEST_SMTP_PASSWORD"),
            ca: env("MAILROOM_TEST_SMTP_CA"),
            sink: PathBuf::from(env("MAILROOM_TEST_SMTP_SINK")),
        }
    }

    pub fn plain_url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received for `rcpt` so far.
    pub fn received_for(&self, rcpt: &str) -> Vec<Received> {
        let mut out = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(&self.sink)
            .expect("the relay's sink directory exists")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        entries.sort();
        for path in entries {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(meta) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let rcpts: Vec<String> = meta["rcpt_tos"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if !rcpts.iter().any(|r| r.eq_ignore_ascii_case(rcpt)) {
                continue;
            }
            let raw = std::fs::read_to_string(path.with_extension("eml"))
                .expect("the .eml is written before the .json");
            let received_ns = path
                .file_stem()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split('-').next())
                .and_then(|t| t.parse().ok())
                .unwrap_or_default();
            out.push(Received {
                received_ns,
                rcpt_tos: rcpts,
                mail_from: meta["mail_from"].as_str().unwrap_or_default().to_string(),
                login: meta["login"].as_str().map(String::from),
                peer_port: meta["peer_port"].as_u64(),
                raw,
            });
        }
        out
    }
}

/// A recipient address no other test uses; `prefix` can ask the relay for a reply
/// (`fail-550-1`, `fail-451-2`, `slow-200`).
pub fn unique_rcpt(prefix: &str) -> String {
    format!("{prefix}.{}@example.com", Uuid::new_v4().simple())
}

pub struct TestApp {
    pub address: String,
    /// Set when the app serves `/metrics` on its own port.
    pub metrics_address: Option<String>,
    pub token: String,
    pub client: reqwest::Client,
    pub worker: Arc<Worker>,
    pub app_data: tempfile::TempDir,
    pub relay: Relay,
    pub shutdown: CancellationToken,
    pub backends_store: Arc<dyn mailroom::store::Store>,
    pub queue: Arc<dyn mailroom::queue::Queue>,
    /// The worker's delivery backend (whether it is paused, and why).
    pub delivery: Arc<dyn mailroom::delivery::Delivery>,
    /// With an external queue: what hands it the messages due later.
    pub scheduler: Option<Arc<mailroom::scheduler::Scheduler>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Settings every test app starts from: SMTP to the plain relay listener, no rate ceiling,
/// fast retries.
pub fn test_config(data_dir: &std::path::Path, relay: &Relay) -> RawConfig {
    RawConfig {
        port: 0,
        data_dir: data_dir.to_path_buf(),
        api_token: Some(SecretString::from(format!("test-token-{}", Uuid::new_v4()))),
        delivery: "smtp".into(),
        smtp_url: Some(SecretString::from(relay.plain_url())),
        smtp_timeout_secs: 10,
        send_rate_per_second: 0.0,
        retry_base_ms: 20,
        retry_max_ms: 200,
        worker_concurrency: 16,
        ..RawConfig::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the API (not the worker: tests drive it with [`TestApp::dispatch_all_pending`]).
pub async fn spawn_app_with(adjust: impl FnOnce(&mut RawConfig)) -> TestApp {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let relay = Relay::from_env();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut raw = test_config(dir.path(), &relay);
    adjust(&mut raw);
    // Empty when the test takes its token from elsewhere (SSM).
    let token = raw
        .api_token
        .as_ref()
        .map(|t| secrecy::ExposeSecret::expose_secret(t).to_string())
        .unwrap_or_default();
    let settings = raw.into_settings().expect("test settings are valid");
    let app = Application::build(
        settings,
        Roles {
            api: true,
            worker: false,
        },
    )
    .await
    .expect("the app builds");
    let address = format!("http://{}", app.local_addr().expect("the API listens"));
    let metrics_address = app.metrics_addr().map(|a| format!("http://{a}"));
    let worker = app.worker();
    let backends_store = app.backends().store.clone();
    let queue = app.backends().queue.clone();
    let scheduler = app.backends().scheduler();
    let delivery = app.backends().delivery.clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        address,
        metrics_address,
        token,
        client: reqwest::Client::new(),
        worker,
        app_data: dir,
        relay,
        shutdown,
        backends_store,
        queue,
        delivery,
        scheduler,
    }
}

pub fn compat_body(token: &str) -> Value {
    json!({
        "data": {
            "email_subject": "Welcome",
            "email_sender": "John doe",
            "email_timestream": "1700000000",
            "email_content": "Hello from the compat API.",
        },
        "token": token,
    })
}

pub fn native_body(to: &str) -> Value {
    json!({
        "from": "Shop <shop@example.com>",
        "to": [to],
        "subject": "Your receipt",
        "text": "Thanks for your order.",
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .header("authorization", format!("Bearer {}", self.token))
            .body(body)
            .send()
            .await
            .expect("the request is sent")
    }

    pub async fn post_compat(&self, body: &Value) -> Response {
        self.client
            .post(self.url("/api/email"))
            .json(body)
            .send()
            .await
            .expect("sent")
    }

    pub async fn post_message(&self, body: &Value, idempotency_key: Option<&str>) -> Response {
        let mut req = self
            .client
            .post(self.url("/v1/messages"))
            .bearer_auth(&self.token)
            .json(body);
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        req.send().await.expect("sent")
    }

    pub async fn post_batch(&self, body: &Value) -> Response {
        self.client
            .post(self.url("/v1/messages/batch"))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("sent")
    }

    /// A GET without a token (health, readiness, metrics, and the 401 cases).
    pub async fn get_public(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.expect("sent")
    }

    /// How many messages `GET /v1/messages` lists.
    pub async fn message_count(&self) -> usize {
        let list = self.get_json("/v1/messages").await;
        list["messages"].as_array().expect("an array").len()
    }

    /// The JSON body of an authenticated GET.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.expect("JSON")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("sent")
    }

    pub async fn get_message(&self, id: &str) -> Value {
        let r = self.get(&format!("/v1/messages/{id}")).await;
        assert_eq!(r.status(), 200, "GET message {id}");
        r.json().await.expect("JSON")
    }

    pub async fn redrive(&self, id: &str) -> Response {
        self.post_empty(&format!("/v1/dead-letters/{id}/redrive"))
            .await
    }

    pub async fn cancel(&self, id: &str) -> Response {
        self.post_empty(&format!("/v1/messages/{id}/cancel")).await
    }

    /// An authenticated POST without a body.
    async fn post_empty(&self, path: &str) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("sent")
    }

    /// Accepts one native message to `to` and returns its id.
    pub async fn send_to(&self, to: &str) -> String {
        accepted_id(self.post_message(&native_body(to), None).await).await
    }

    /// Accepts `n` native messages, each to a recipient of its own; returns (id, recipient).
    pub async fn send_to_each(&self, prefix: &str, n: usize) -> Vec<(String, String)> {
        let mut sent = Vec::with_capacity(n);
        for i in 0..n {
            let to = unique_rcpt(&format!("{prefix}-{i}"));
            sent.push((self.send_to(&to).await, to));
        }
        sent
    }

    /// Holds the SQLite store's write lock (another process's `BEGIN EXCLUSIVE`) until the
    /// returned connection is given to [`TestApp::unlock_store`]: writes wait out the busy
    /// timeout and fail, reads go on.
    pub async fn lock_store(&self) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        let db = self.app_data.path().join("mailroom.db");
        let mut blocker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .expect("open");
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut blocker)
            .await
            .expect("lock");
        blocker
    }

    pub async fn unlock_store(&self, mut blocker: sqlx::SqliteConnection) {
        sqlx::query("ROLLBACK")
            .execute(&mut blocker)
            .await
            .expect("unlock");
    }

    /// Runs the worker until no message is due; returns how many leases it processed.
    pub async fn dispatch_all_pending(&self) -> usize {
        let mut total = 0;
        loop {
            let n = self.worker.run_once().await.expect("the queue answers");
            if n == 0 {
                return total;
            }
            total += n;
        }
    }

    /// Dispatches until the message reaches `status`, letting retry delays pass.
    pub async fn dispatch_until(&self, id: &str, status: &str) -> Value {
        for _ in 0..100 {
            self.dispatch_all_pending().await;
            let v = self.get_message(id).await;
            if v["status"] == status {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "message {id} never reached {status}: {}",
            self.get_message(id).await
        );
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.app_data.path().join("archive")
    }
}

/// The kinds of a message's events (`GET /v1/messages/{id}`), oldest first.
pub fn event_kinds(message: &Value) -> Vec<&str> {
    message["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect()
}

/// The `message_id` of a 202 answer, asserting the status first.
pub async fn accepted_id(r: Response) -> String {
    assert_eq!(r.status(), 202, "accepted");
    let v: Value = r.json().await.expect("JSON");
    v["message_id"].as_str().expect("an id").to_string()
}

/// The error body's field name, asserting the status first.
pub async fn error_field(r: Response, status: u16) -> (String, String) {
    assert_eq!(r.status(), status);
    let v: Value = r.json().await.expect("a JSON error body");
    let code = v["error"]["code"].as_str().expect("error.code").to_string();
    (
        code,
        v["error"]["field"].as_str().unwrap_or_default().to_string(),
    )
}

/// The Redis server `scripts/test` starts.
pub fn redis_url() -> String {
    env("MAILROOM_TEST_REDIS_URL")
}

/// A new, empty database on the PostgreSQL server `scripts/test` starts; returns its URL.
#[cfg(feature = "postgres")]
pub async fn fresh_pg_database() -> String {
    use sqlx::Connection;
    let admin = env("MAILROOM_TEST_DATABASE_URL");
    let name = format!("mailroom_test_{}", Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL answers");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("a test database is created");
    let (base, _) = admin
        .rsplit_once('/')
        .expect("the admin URL names a database");
    format!("{base}/{name}")
}

/// The Kafka-protocol broker `scripts/test` starts on 127.0.0.1.
#[cfg(feature = "kafka")]
pub fn kafka_brokers() -> String {
    std::env::var("MAILROOM_TEST_KAFKA").expect(
        "MAILROOM_TEST_KAFKA is not set: run the tests through scripts/test, which starts a Kafka broker",
    )
}

/// A consumer of every partition of `topic` from its beginning. It is assigned the partitions
/// rather than joining a group, so it reads at once (a group join takes seconds).
#[cfg(feature = "kafka")]
pub fn kafka_reader(topic: &str) -> rdkafka::consumer::StreamConsumer {
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", format!("reader-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            assignment
                .add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .expect("offset");
        }
    }
    assert!(assignment.count() > 0, "topic {topic} has partitions");
    consumer.assign(&assignment).expect("assign");
    consumer
}
