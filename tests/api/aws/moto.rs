//! The moto server (SQS, S3, SSM, Secrets Manager, SES) that `scripts/test` starts on 127.0.0.1:
//! tests take turns with it, and each turn starts from a reset, empty emulator.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;

/// One test's turn with the emulator.
pub struct Moto {
    pub endpoint: String,
    pub config: aws_config::SdkConfig,
    http: reqwest::Client,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const REGION: &str = "us-east-1";

impl Moto {
    /// Waits for the emulator, resets it and hands it over.
    pub async fn start() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let endpoint = std::env::var("MAILROOM_TEST_AWS_ENDPOINT").expect(
            "MAILROOM_TEST_AWS_ENDPOINT is not set: run the tests through scripts/test, which starts the moto server",
        );
        let turn = TURN.lock().await;
        let http = reqwest::Client::new();
        http.post(format!("{endpoint}/moto-api/reset"))
            .send()
            .await
            .expect("the moto server answers")
            .error_for_status()
            .expect("moto resets");
        let config = mailroom::aws::sdk_config(Some(REGION), Some(&endpoint), "the tests")
            .await
            .expect("a region is given");
        Self {
            endpoint,
            config,
            http,
            _turn: turn,
        }
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.config)
    }

    pub fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.config)
    }

    /// A queue named `name` whose redrive policy moves a message to `{name}-dlq` after
    /// `max_receive_count` receives. Returns the queue's and the dead-letter queue's URLs.
    pub async fn queue_with_dlq(
        &self,
        name: &str,
        max_receive_count: u32,
        max_message_bytes: Option<u32>,
    ) -> (String, String) {
        let sqs = self.sqs();
        let dlq = sqs
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .expect("create the DLQ");
        let dlq_url = dlq.queue_url().expect("a URL").to_string();
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("DLQ attributes")
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("an ARN");
        let mut attributes = HashMap::from([(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count})
                .to_string(),
        )]);
        if let Some(n) = max_message_bytes {
            attributes.insert(QueueAttributeName::MaximumMessageSize, n.to_string());
        }
        let queue = sqs
            .create_queue()
            .queue_name(name)
            .set_attributes(Some(attributes))
            .send()
            .await
            .expect("create the queue");
        (queue.queue_url().expect("a URL").to_string(), dlq_url)
    }

    /// Bodies (and the `mailroom-error` attribute) of what a queue holds, received once.
    pub async fn drain(&self, url: &str) -> Vec<(String, Option<String>)> {
        let out = self
            .sqs()
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive");
        out.messages()
            .iter()
            .map(|m| {
                let error = m
                    .message_attributes()
                    .and_then(|a| a.get("mailroom-error"))
                    .and_then(|v| v.string_value())
                    .map(str::to_string);
                (m.body().unwrap_or_default().to_string(), error)
            })
            .collect()
    }

    pub async fn bucket(&self, name: &str) {
        self.http
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .expect("moto answers")
            .error_for_status()
            .expect("bucket created");
    }

    /// Every key in the bucket.
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let xml = self
            .http
            .get(format!("{}/{bucket}?list-type=2", self.endpoint))
            .send()
            .await
            .expect("moto answers")
            .text()
            .await
            .expect("a listing");
        xml.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// The JSON object at `key`, read through an S3 client (moto refuses unsigned reads).
    pub async fn object(&self, bucket: &str, key: &str) -> Value {
        use object_store::ObjectStoreExt;
        let s3 = mailroom::config::S3Settings {
            region: Some(REGION.into()),
            endpoint_url: Some(self.endpoint.clone()),
            ..Default::default()
        };
        let url = url::Url::parse(&format!("s3://{bucket}")).expect("URL");
        let archive = mailroom::archive::Archive::from_url(&url, &s3).expect("S3 client");
        let bytes = archive
            .object_store()
            .get(&object_store::path::Path::from(key))
            .await
            .expect("the object exists")
            .bytes()
            .await
            .expect("its bytes");
        serde_json::from_slice(&bytes).expect("a JSON object")
    }

    /// Lets SES send from `address`.
    pub async fn verify_sender(&self, address: &str) {
        aws_sdk_sesv2::Client::new(&self.config)
            .create_email_identity()
            .email_identity(address)
            .send()
            .await
            .expect("identity created");
    }

    /// What SES sent: each raw message with its envelope recipients.
    pub async fn ses_sent(&self) -> Vec<Value> {
        let data: Value = self
            .http
            .get(format!("{}/moto-api/data.json", self.endpoint))
            .send()
            .await
            .expect("moto answers")
            .json()
            .await
            .expect("JSON");
        data["ses"]["RawMessage"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn put_parameter(&self, name: &str, value: &str) {
        self.ssm()
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .expect("parameter written");
    }
}

/// What [`SlowProxy`] does with the bytes a client sends.
#[derive(Clone, Copy, Debug)]
pub enum Hold {
    /// Passes them on at once.
    Nothing,
    /// Passes them on after this long: a slow answer.
    For(std::time::Duration),
    /// Waits this long, then closes the connection: no answer at all.
    ThenDrop(std::time::Duration),
    /// Closes a connection, after this long, when what it sends holds this text; passes the
    /// rest on at once: a queue that fails some calls and takes others.
    DropIfHolds(&'static str, std::time::Duration),
}

/// A TCP proxy on 127.0.0.1 in front of the emulator that can hold back what clients send, for
/// an SQS that is slow to take a message, or fails after a while.
pub struct SlowProxy {
    pub endpoint: String,
    hold: std::sync::Arc<std::sync::Mutex<Hold>>,
}

impl SlowProxy {
    /// Proxies to `endpoint` (`http://127.0.0.1:PORT`), passing everything on until told
    /// otherwise.
    pub async fn start(endpoint: &str) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let proxy = format!("http://{}", listener.local_addr().expect("address"));
        let hold = std::sync::Arc::new(std::sync::Mutex::new(Hold::Nothing));
        let shared = hold.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let hold = shared.clone();
                tokio::spawn(async move {
                    let (mut client_in, mut client_out) = client.into_split();
                    let (mut server_in, mut server_out) = server.into_split();
                    let answers = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_in, &mut client_out).await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = client_in.read(&mut buf).await {
                        let now = *hold.lock().expect("lock");
                        match now {
                            Hold::Nothing => {}
                            Hold::For(d) => tokio::time::sleep(d).await,
                            Hold::ThenDrop(d) => {
                                tokio::time::sleep(d).await;
                                break;
                            }
                            Hold::DropIfHolds(text, d) => {
                                let sent = String::from_utf8_lossy(&buf[..n]);
                                if sent.contains(text) {
                                    tokio::time::sleep(d).await;
                                    break;
                                }
                            }
                        }
                        if server_out.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    // Both directions end together, as a dropped connection does.
                    answers.abort();
                });
            }
        });
        Self {
            endpoint: proxy,
            hold,
        }
    }

    pub fn hold(&self, hold: Hold) {
        *self.hold.lock().expect("lock") = hold;
    }
}
