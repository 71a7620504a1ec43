//! The settings as the user wrote them: defaults, then a TOML file, then the environment.

use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{ConfigError, ENV_VARS};

/// The settings as written by the user: every field has the name of its variable, lower-cased.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub port: u16,
    pub bind_address: String,
    pub metrics_port: Option<u16>,
    pub data_dir: PathBuf,
    #[serde(serialize_with = "redact")]
    pub api_token: Option<SecretString>,
    pub api_token_file: Option<PathBuf>,
    pub ssm_token_parameter: Option<String>,
    pub ssm_token_ttl_secs: u64,
    #[serde(serialize_with = "redact_url")]
    pub database_url: Option<SecretString>,
    pub database_pool_size: u32,
    pub database_statement_timeout_ms: u64,
    pub queue_backend: Option<String>,
    pub sqs_queue_url: Option<String>,
    pub sqs_dlq_url: Option<String>,
    pub sqs_poll_interval: Option<u64>,
    pub sqs_wait_time_secs: u64,
    pub visibility_timeout_secs: u64,
    pub kafka_brokers: Option<String>,
    pub kafka_topic: Option<String>,
    pub kafka_group_id: Option<String>,
    pub kafka_create_topics: bool,
    pub kafka_partitions: i32,
    pub kafka_replication_factor: i32,
    pub kafka_session_timeout_secs: u64,
    pub kafka_security_protocol: Option<String>,
    pub kafka_sasl_mechanism: Option<String>,
    pub kafka_sasl_username: Option<String>,
    #[serde(serialize_with = "redact")]
    pub kafka_sasl_password: Option<SecretString>,
    pub kafka_ssl_ca_location: Option<PathBuf>,
    pub events_topic: Option<String>,
    pub delivery: String,
    #[serde(serialize_with = "redact_url")]
    pub smtp_url: Option<SecretString>,
    pub smtp_timeout_secs: u64,
    pub archive_url: Option<String>,
    pub s3_bucket_name: Option<String>,
    pub s3_server_side_encryption: Option<String>,
    pub s3_sse_kms_key_id: Option<String>,
    pub ses_configuration_set: Option<String>,
    #[serde(deserialize_with = "decimal")]
    pub send_rate_per_second: f64,
    pub send_burst: u32,
    #[serde(serialize_with = "redact_url")]
    pub redis_url: Option<SecretString>,
    pub redis_key_prefix: String,
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub worker_concurrency: usize,
    pub poll_interval_ms: u64,
    pub max_body_bytes: usize,
    pub shutdown_grace_secs: u64,
    pub compat_recipient: Option<String>,
    pub default_from: Option<String>,
    pub templates_dir: Option<PathBuf>,
    pub log_format: Option<String>,
    pub instance_id: Option<String>,
    pub aws_region: Option<String>,
    pub aws_endpoint_url: Option<String>,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            port: 8080,
            bind_address: "127.0.0.1".into(),
            metrics_port: None,
            data_dir: PathBuf::from("./mailroom-data"),
            api_token: None,
            api_token_file: None,
            ssm_token_parameter: None,
            ssm_token_ttl_secs: 300,
            database_url: None,
            database_pool_size: 10,
            database_statement_timeout_ms: 10_000,
            queue_backend: None,
            sqs_queue_url: None,
            sqs_dlq_url: None,
            sqs_poll_interval: None,
            sqs_wait_time_secs: 20,
            visibility_timeout_secs: 60,
            kafka_brokers: None,
            kafka_topic: None,
            kafka_group_id: None,
            kafka_create_topics: false,
            kafka_partitions: 6,
            kafka_replication_factor: -1,
            kafka_session_timeout_secs: 10,
            kafka_security_protocol: None,
            kafka_sasl_mechanism: None,
            kafka_sasl_username: None,
            kafka_sasl_password: None,
            kafka_ssl_ca_location: None,
            events_topic: None,
            delivery: "file".into(),
            smtp_url: None,
            smtp_timeout_secs: 30,
            archive_url: None,
            s3_bucket_name: None,
            s3_server_side_encryption: None,
            s3_sse_kms_key_id: None,
            ses_configuration_set: None,
            send_rate_per_second: 7.0,
            send_burst: 1,
            redis_url: None,
            redis_key_prefix: "mailroom".into(),
            max_attempts: 8,
            retry_base_ms: 5_000,
            retry_max_ms: 3_600_000,
            worker_concurrency: 32,
            poll_interval_ms: 200,
            max_body_bytes: 1024 * 1024,
            shutdown_grace_secs: 25,
            compat_recipient: None,
            default_from: None,
            templates_dir: None,
            log_format: None,
            instance_id: None,
            aws_region: None,
            aws_endpoint_url: None,
        }
    }
}

fn redact<S: serde::Serializer>(value: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_some("[redacted]"),
        None => s.serialize_none(),
    }
}

/// A URL with its user name and password, and any query value named like a secret, hidden: the
/// scheme, host, database and options stay readable (`mailroom config` is how an operator sees which
/// database and relay a process uses). Text that is no URL is hidden whole.
fn redact_url<S: serde::Serializer>(value: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    let Some(secret) = value else {
        return s.serialize_none();
    };
    let Ok(mut url) = url::Url::parse(secret.expose_secret()) else {
        return s.serialize_some("[redacted]");
    };
    if url.scheme() == "sqlite" {
        // A file name, and no credentials.
        return s.serialize_some(url.as_str());
    }
    // Text after the scheme that is no `//user:password@host` (`postgres:user:pw@db`) is hidden
    // whole; so is the user name: some providers take an API token as both user and password.
    if url.cannot_be_a_base()
        || (url.password().is_some() && url.set_password(Some("***")).is_err())
        || (!url.username().is_empty() && url.set_username("***").is_err())
    {
        return s.serialize_some("[redacted]");
    }
    if url.query().is_some() {
        let secretive = |k: &str| {
            let k = k.to_ascii_lowercase();
            ["pass", "secret", "token", "key", "auth"]
                .iter()
                .any(|w| k.contains(w))
        };
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if secretive(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    s.serialize_some(url.as_str())
}

impl RawConfig {
    /// Reads defaults, then `file` (if any), then the environment, then replaces settings
    /// written as `ssm:` or `secretsmanager:` references with their values.
    pub async fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let figment = super::resolve::resolve(Self::figment(file)?).await?;
        Self::extract(figment)
    }

    /// Where `/health` is served (on METRICS_PORT for every role when it is set, on PORT
    /// otherwise, at BIND_ADDRESS), from the same sources but reading those three settings
    /// alone: `healthcheck` runs every few seconds, and resolving the `ssm:` and
    /// `secretsmanager:` references of the others would call AWS at every probe (a slow AWS API
    /// would then mark a healthy process unhealthy), and a reference in a number setting would
    /// not even parse unresolved.
    pub fn health_addr(
        file: Option<&std::path::Path>,
    ) -> Result<std::net::SocketAddr, ConfigError> {
        #[derive(Deserialize)]
        struct Ports {
            port: u16,
            metrics_port: Option<u16>,
            bind_address: String,
        }
        let ports: Ports = extract(Self::figment(file)?)?;
        Ok(std::net::SocketAddr::new(
            super::settings::bind_ip(&ports.bind_address)?,
            ports.metrics_port.unwrap_or(ports.port),
        ))
    }

    /// The layered sources, not yet checked.
    fn figment(file: Option<&std::path::Path>) -> Result<Figment, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Source(format!(
                    "The config file {} does not exist.",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        Ok(figment.merge(TextEnv(Env::raw().only(ENV_VARS))))
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        extract(figment)
    }
}

/// The settings `T` reads from `figment`, or the first bad one named in words.
fn extract<T: serde::de::DeserializeOwned>(figment: Figment) -> Result<T, ConfigError> {
    // Lossy: a number or a boolean setting may be written as text ("8080", "true"), as every
    // environment variable is.
    figment.extract_lossy().map_err(|e| {
            if let figment::error::Kind::UnknownField(key, _) = &e.kind {
                let source = e.metadata.as_ref().map(|m| m.name.to_string());
                return ConfigError::Source(format!(
                    "Unknown setting `{key}` (in {}): the keys are the variable names in lower case, such as `port` or `send_rate_per_second`.",
                    source.as_deref().unwrap_or("the config file")
                ));
            }
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(figment::Source::File(path)) => format!("{} {}", m.name, path.display()),
                    _ => m.name.to_string(),
                })
                .unwrap_or_default();
            let Some(var) = e.path.last().map(|k| k.to_uppercase()) else {
                // Not one setting's value: the file itself (a TOML syntax error).
                let kind = e.kind.to_string();
                return ConfigError::Source(format!("Cannot read the {source}: {}", kind.trim_end()));
            };
            let said = match &e.kind {
                figment::error::Kind::InvalidType(actual, expected)
                | figment::error::Kind::InvalidValue(actual, expected) => {
                    format!("{var}={} (from {source}): expected {}", given(actual), in_words(expected))
                }
                kind => format!("{var} (from {source}): {kind}"),
            };
            ConfigError::Source(format!("Invalid setting {said}."))
        })
}

/// A value as it was written.
fn given(actual: &figment::error::Actual) -> String {
    use figment::error::Actual;
    match actual {
        Actual::Str(v) => format!("{v:?}"),
        Actual::Unsigned(v) => v.to_string(),
        Actual::Signed(v) => v.to_string(),
        Actual::Float(v) => v.to_string(),
        Actual::Bool(v) => v.to_string(),
        other => other.to_string(),
    }
}

/// What a setting accepts, in words: serde names the Rust type ("expected u16").
fn in_words(expected: &str) -> String {
    match expected {
        "u16" => "a whole number from 0 to 65535".into(),
        "u32" => "a whole number from 0 to 4294967295".into(),
        "u64" | "usize" => "a whole number, 0 or more".into(),
        "i32" | "i64" => "a whole number".into(),
        "bool" | "a boolean" => "true or false".into(),
        "f32" | "f64" => "a number".into(),
        other => other.into(),
    }
}

/// A variable's value without the blanks around it, and without one pair of double quotes
/// around it (an env file for `docker run --env-file` keeps `API_TOKEN="…"` quoted), as
/// figment's own reading took them off.
fn as_written(value: &str) -> String {
    let value = value.trim();
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
        .to_string()
}

/// A number with a fraction, read from text as f64. (figment's lossy reading takes a short
/// decimal as an f32: `0.1` would become 0.10000000149.)
fn decimal<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct Decimal;
    impl serde::de::Visitor<'_> for Decimal {
        type Value = f64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number")
        }
        fn visit_f64<E>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<f64, E> {
            v.trim()
                .parse()
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))
        }
    }
    d.deserialize_any(Decimal)
}

/// The environment with every value kept as the text it is (see [`as_written`]). figment's
/// `Env` reads a value as TOML would (`1` a number, `true` a boolean), which refuses an
/// `INSTANCE_ID=1` meant as text and drops a token's leading zeros; numbers and booleans are
/// read from text by the lossy extraction instead.
struct TextEnv(Env);

impl figment::Provider for TextEnv {
    fn metadata(&self) -> figment::Metadata {
        self.0.metadata()
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let dict = self
            .0
            .iter()
            .map(|(key, value)| {
                (
                    key.to_string(),
                    figment::value::Value::from(as_written(&value)),
                )
            })
            .collect();
        Ok(figment::Profile::Default.collect(dict))
    }
}
