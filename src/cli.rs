//! The `mailroom` command line.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use object_store::ObjectStoreExt;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::config::Settings;
use crate::message::{
    CompatEmail, Content, Message, NativeEmail, NativeRules, Status, strict_json,
};
use crate::startup::{Application, Backends, Roles, shutdown_on_signals};
use crate::store::{Acceptance, Accepted, ListFilter};
use crate::telemetry;

#[derive(Parser, Debug)]
#[command(
    name = "mailroom",
    version,
    about = "Reliable outbound email: accept, queue, deliver at a global rate, archive, retry, dead-letter."
)]
pub struct Cli {
    /// A TOML file with settings (environment variables override it).
    #[arg(long, env = "CONFIG_FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The process whose needs `mailroom check` checks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckRole {
    Serve,
    Api,
    Worker,
}

impl CheckRole {
    fn roles(self) -> Roles {
        Roles {
            api: self != CheckRole::Worker,
            worker: self != CheckRole::Api,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP API and the worker in one process.
    Serve,
    /// Run only the HTTP API.
    Api,
    /// Run only the worker.
    Worker,
    /// Queue one message, or every line of a JSONL file.
    Send(SendArgs),
    /// Show a message's status and history.
    Status { id: Uuid },
    /// Withdraw a message that has not been sent yet (queued, scheduled or waiting for a retry).
    Cancel { id: Uuid },
    /// Inspect and redrive dead letters.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// Check the configuration and reach every configured backend.
    Check {
        /// Check only what this role uses, with the permissions it is given: `api` (token,
        /// templates, store, queue, Redis), `worker` (store, queue, Redis, delivery, archive),
        /// or `serve` (both).
        #[arg(long, value_enum, default_value_t = CheckRole::Serve)]
        role: CheckRole,
    },
    /// Print the effective settings, secrets redacted.
    Config {
        /// Print instead the name of every environment variable mailroom reads, one per line.
        #[arg(long)]
        variables: bool,
    },
    /// Create or update the database schema.
    Migrate,
    /// Exit 0 if the local server answers /health (for container health checks).
    Healthcheck {
        /// Address to probe; defaults to 127.0.0.1:$METRICS_PORT when set, else 127.0.0.1:$PORT.
        #[arg(long)]
        addr: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DeadLetters {
    List {
        /// How many to list, newest first (1 to 500, as the API's `limit`).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
    },
    /// Put dead letters back in the queue.
    Redrive {
        ids: Vec<Uuid>,
        /// Redrive every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// A JSONL file: one native message per line (the body of POST /v1/messages), or a compat
    /// body ({"data": {...}}). `-` reads standard input.
    #[arg(long, conflicts_with_all = ["to", "subject", "text", "html", "template", "send_at"])]
    pub file: Option<PathBuf>,
    /// The sender; with --file, of each line that names none (DEFAULT_FROM otherwise).
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long)]
    pub to: Vec<String>,
    #[arg(long)]
    pub subject: Option<String>,
    #[arg(long)]
    pub text: Option<String>,
    #[arg(long)]
    pub html: Option<String>,
    /// A template of TEMPLATES_DIR, which makes the subject, text and html.
    #[arg(long, conflicts_with_all = ["subject", "text", "html"])]
    pub template: Option<String>,
    /// The template's variables: a JSON object, such as '{"name": "Ann"}'.
    #[arg(long, requires = "template")]
    pub variables: Option<String>,
    /// When to send it: RFC 3339 or Unix seconds, at most 30 days ahead.
    #[arg(long)]
    pub send_at: Option<String>,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Config { variables: true } = cli.command {
        for name in crate::config::ENV_VARS
            .iter()
            .chain(crate::config::OTHER_ENV_VARS)
        {
            println!("{name}");
        }
        return Ok(());
    }
    let settings = Settings::load(cli.config.as_deref()).await?;
    telemetry::init_logs(settings.log_json);
    match cli.command {
        Command::Serve => {
            serve(
                settings,
                Roles {
                    api: true,
                    worker: true,
                },
            )
            .await
        }
        Command::Api => {
            serve(
                settings,
                Roles {
                    api: true,
                    worker: false,
                },
            )
            .await
        }
        Command::Worker => {
            serve(
                settings,
                Roles {
                    api: false,
                    worker: true,
                },
            )
            .await
        }
        Command::Send(args) => send(settings, args).await,
        Command::Status { id } => status(settings, id).await,
        Command::Cancel { id } => {
            let backends = Backends::build(settings).await?;
            backends.intake.cancel(id).await?;
            println!("{id} cancelled");
            Ok(())
        }
        Command::DeadLetters(cmd) => dead_letters(settings, cmd).await,
        Command::Check { role } => check(settings, role.roles()).await,
        Command::Config { .. } => {
            print!(
                "{}",
                toml::to_string(&effective(&settings)).context("Failed to render the settings")?
            );
            Ok(())
        }
        Command::Migrate => {
            let url = settings.database_url.expose_secret().to_string();
            Backends::build(settings).await?;
            println!(
                "Schema is up to date ({}).",
                url.split(':').next().unwrap_or("database")
            );
            Ok(())
        }
        Command::Healthcheck { addr } => {
            // `/health` is on METRICS_PORT for every role when it is set, and on PORT otherwise.
            let port = settings
                .metrics_addr
                .map_or(settings.http_addr.port(), |a| a.port());
            healthcheck(addr.unwrap_or_else(|| format!("127.0.0.1:{port}"))).await
        }
    }
}

async fn serve(settings: Settings, roles: Roles) -> anyhow::Result<()> {
    let app = Application::build(settings, roles).await?;
    if let Some(addr) = app.local_addr() {
        let s = &app.backends().settings;
        let url = local_url(addr);
        println!("mailroom is listening on {url}");
        match &app.generated_token {
            Some(token) => {
                println!(
                    "A new API token was made and saved in {}:",
                    s.data_dir.join("token").display()
                );
                println!("  {}", token.expose_secret());
                println!("Try it:");
                println!(
                    "  curl -s -X POST {url}/api/email -H 'Content-Type: application/json' \\\n    -d '{{\"data\": {{\"email_subject\": \"Hello\", \"email_sender\": \"John doe\", \"email_timestream\": \"{}\", \"email_content\": \"It works.\"}}, \"token\": \"{}\"}}'",
                    chrono::Utc::now().timestamp(),
                    token.expose_secret()
                );
            }
            None if matches!(s.token, crate::config::TokenSettings::Generated(_)) => {
                println!("API token: in {}", s.data_dir.join("token").display());
            }
            None => {}
        }
        let _ = std::io::stdout().flush();
    } else if let Some(addr) = app.metrics_addr() {
        println!(
            "mailroom worker: /health and /metrics on {}",
            local_url(addr)
        );
        let _ = std::io::stdout().flush();
    }
    app.run_until_stopped(shutdown_on_signals()).await
}

/// Parses one JSONL line: a native message, or a compat body.
fn parse_line(value: Value, backends: &Backends) -> Result<Message, String> {
    let content = if value.get("data").is_some() {
        let (_, fields) = CompatEmail::parse(&value).map_err(|e| e.to_string())?;
        Content::Compat(fields.validate().map_err(|e| e.to_string())?)
    } else {
        let templates = backends.templates.current();
        let rules = NativeRules {
            default_from: backends.settings.default_from.as_ref(),
            templates: &templates,
        };
        let email = NativeEmail::parse(value, "", rules).map_err(|e| e.to_string())?;
        Content::Native(Box::new(email))
    };
    let message = Message::new(content);
    // Over the queue's size limit (SQS, Kafka): refused as this line, as the API refuses it as
    // its own request or batch entry, not as the whole chunk it would be queued with.
    backends
        .intake
        .queue
        .check(&message)
        .map_err(|e| e.to_string())?;
    Ok(message)
}

/// The URL a local client reaches `addr` at (127.0.0.1 for a wildcard bind).
fn local_url(addr: std::net::SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    format!("http://{host}:{}", addr.port())
}

async fn send(settings: Settings, args: SendArgs) -> anyhow::Result<()> {
    // A line is one request body: the API's limit holds for it too.
    let max_line = settings.max_body_bytes;
    let backends = Backends::build(settings).await?;
    backends.load_templates()?;
    let Some(path) = args.file else {
        let variables: Option<Value> = args
            .variables
            .as_deref()
            .map(strict_json::from_str)
            .transpose()
            .map_err(|e| anyhow::anyhow!("Invalid message: --variables is not JSON: {e}"))?;
        let value = json!({
            "from": args.from, "to": args.to, "subject": args.subject.unwrap_or_default(),
            "text": args.text, "html": args.html,
            "template": args.template, "variables": variables, "send_at": args.send_at,
        });
        let value = strip_nulls(value);
        let message =
            parse_line(value, &backends).map_err(|e| anyhow::anyhow!("Invalid message: {e}"))?;
        let id = message.id;
        backends
            .intake
            .accept(Acceptance {
                messages: vec![message],
                idempotency: None,
            })
            .await?;
        println!("{id}");
        return Ok(());
    };
    // Read as a stream: a file of millions of messages needs no more memory than a chunk of
    // them, and a line over the limit is counted and skipped without being held.
    let (mut reader, length): (Box<dyn AsyncBufRead + Unpin + Send>, Option<u64>) =
        if path.as_os_str() == "-" {
            (
                Box::new(tokio::io::BufReader::new(tokio::io::stdin())),
                None,
            )
        } else {
            let file = tokio::fs::File::open(&path)
                .await
                .with_context(|| format!("Failed to open {}", path.display()))?;
            let length = file.metadata().await.ok().map(|m| m.len());
            (Box::new(tokio::io::BufReader::new(file)), length)
        };
    let bar = match length {
        Some(length) => ProgressBar::new(length).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} read, {msg} (eta {eta})")
                .expect("the template is valid"),
        ),
        None => ProgressBar::no_length().with_style(
            ProgressStyle::with_template("{spinner} {bytes} read, {msg}")
                .expect("the template is valid"),
        ),
    };
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let mut chunk = Vec::new();
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        let read = read_line(&mut reader, max_line, &mut buf)
            .await
            .with_context(|| format!("Failed to read line {} of the file", n + 1))?;
        let Some((line, bytes)) = read else { break };
        n += 1;
        bar.inc(bytes);
        let parsed = match line {
            Line::Text(text) if text.trim().is_empty() => continue,
            Line::Text(text) => strict_json::from_str(&text)
                .map_err(|e| e.to_string())
                .and_then(|v| parse_line(with_sender(v, args.from.as_deref()), &backends)),
            Line::TooLong => Err(format!(
                "is {bytes} bytes; the limit is MAX_BODY_BYTES ({max_line} bytes), as for a request"
            )),
            Line::NotUtf8 => Err("is not UTF-8".to_string()),
        };
        match parsed {
            Ok(m) => chunk.push((n, m)),
            Err(e) => {
                rejected += 1;
                bar.suspend(|| eprintln!("line {n}: {e}"));
            }
        }
        if chunk.len() == QUEUE_CHUNK {
            let not_queued = queue_chunk(&backends, &mut chunk, n, &bar).await?;
            accepted += QUEUE_CHUNK as u64 - not_queued;
            rejected += not_queued;
            bar.set_message(format!("{accepted} queued"));
        }
    }
    // What is left after the last line (which may be blank or rejected).
    let k = chunk.len() as u64;
    let not_queued = queue_chunk(&backends, &mut chunk, n, &bar).await?;
    accepted += k - not_queued;
    rejected += not_queued;
    bar.finish_and_clear();
    println!("{accepted} queued, {rejected} rejected");
    if rejected > 0 {
        bail!("{rejected} line(s) were rejected");
    }
    Ok(())
}

/// A native message of `send --file` that names no sender takes the one of `--from`.
fn with_sender(mut value: Value, from: Option<&str>) -> Value {
    if let (Some(from), Value::Object(fields)) = (from, &mut value)
        && !fields.contains_key("data")
        && !fields.contains_key("from")
    {
        fields.insert("from".into(), Value::from(from));
    }
    value
}

/// One line of a JSONL file, without its line end.
enum Line {
    Text(String),
    /// Longer than the limit: skipped, not kept.
    TooLong,
    NotUtf8,
}

/// Reads the next line holding at most `max` bytes of it in memory (`buf` is reused); answers
/// the line and how many bytes it took from the reader, or `None` at the end.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(Line, u64)>> {
    buf.clear();
    // One byte over the limit tells a line at the limit (its line end read) from a longer one.
    let n = (&mut *reader)
        .take(max as u64 + 2)
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    let mut taken = n as u64;
    let ended = buf.last() == Some(&b'\n');
    if ended {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    if buf.len() > max {
        // The rest of the line, up to and with its line end, goes unread into memory.
        if !ended {
            loop {
                let available = reader.fill_buf().await?;
                if available.is_empty() {
                    break;
                }
                let (used, end) = match available.iter().position(|&b| b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (available.len(), false),
                };
                reader.consume(used);
                taken += used as u64;
                if end {
                    break;
                }
            }
        }
        return Ok(Some((Line::TooLong, taken)));
    }
    let line = match String::from_utf8(std::mem::take(buf)) {
        Ok(text) => Line::Text(text),
        Err(_) => Line::NotUtf8,
    };
    Ok(Some((line, taken)))
}

/// Messages of `send --file` accepted together: one transaction (and one queue call) each.
const QUEUE_CHUNK: usize = 100;

/// Accepts the messages in `chunk` (emptying it), each with its line number, read up to line
/// `through`. Answers how many the queue did not take (each named by its line on stderr).
async fn queue_chunk(
    backends: &Backends,
    chunk: &mut Vec<(usize, Message)>,
    through: usize,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    if chunk.is_empty() {
        return Ok(0);
    }
    let (lines, messages): (Vec<usize>, Vec<Message>) = std::mem::take(chunk).into_iter().unzip();
    let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
    let accepted = backends
        .intake
        .accept(Acceptance {
            messages,
            idempotency: None,
        })
        .await
        .with_context(|| format!("Failed to queue the messages up to line {through}"))?;
    let Accepted::Partly(failed) = accepted else {
        return Ok(0);
    };
    for (id, error) in &failed {
        let line = ids.iter().position(|i| i == id).map_or(0, |i| lines[i]);
        bar.suspend(|| eprintln!("line {line}: {error}"));
    }
    Ok(failed.len() as u64)
}

fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        v => v,
    }
}

async fn status(settings: Settings, id: Uuid) -> anyhow::Result<()> {
    let backends = Backends::build(settings).await?;
    let record = backends
        .store
        .get(id)
        .await?
        .with_context(|| format!("No message with id {id}"))?;
    let events = backends.store.events(id).await?;
    let out = json!({
        "id": id, "status": record.status, "attempts": record.attempts,
        "last_error": record.last_error, "subject": record.message.subject(),
        "archive_key": record.message.archive_key(), "events": events,
        "send_at": record.message.due_later(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn dead_letters(settings: Settings, cmd: DeadLetters) -> anyhow::Result<()> {
    let backends = Backends::build(settings).await?;
    match cmd {
        DeadLetters::List { limit } => {
            let records = backends
                .store
                .list(ListFilter {
                    status: Some(Status::Dead),
                    before: None,
                    limit,
                })
                .await?;
            for r in &records {
                println!(
                    "{}  {}  attempts={}  {}",
                    r.message.id,
                    r.updated_at.to_rfc3339(),
                    r.attempts,
                    r.last_error.as_deref().unwrap_or("")
                );
            }
            eprintln!("{} dead letter(s)", records.len());
        }
        DeadLetters::Redrive { ids, all } => {
            let ids = if all {
                let mut ids = Vec::new();
                let mut before = None;
                loop {
                    let page = backends
                        .store
                        .list(ListFilter {
                            status: Some(Status::Dead),
                            before,
                            limit: 500,
                        })
                        .await?;
                    before = page.last().map(|r| r.message.id);
                    ids.extend(page.iter().map(|r| r.message.id));
                    if page.len() < 500 {
                        break;
                    }
                }
                ids
            } else {
                ids
            };
            if ids.is_empty() {
                bail!("Name dead letter ids to redrive, or pass --all");
            }
            // Each id is tried: one that is no longer dead does not keep the rest back.
            let mut failed = 0;
            for id in &ids {
                match backends.intake.redrive(*id).await {
                    Ok(()) => println!("{id} redriven"),
                    Err(e) => {
                        failed += 1;
                        eprintln!("{id} not redriven: {e}");
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {} dead letter(s) were not redriven", ids.len());
            }
        }
    }
    Ok(())
}

/// The settings as given, with what start-up works out from them filled in (the database, the
/// queue backend, the archive and the templates directory), so that `config` shows what a
/// process started with them uses.
fn effective(settings: &Settings) -> crate::config::RawConfig {
    let mut raw = settings.raw.clone();
    raw.database_url = Some(settings.database_url.clone());
    raw.queue_backend = Some(settings.queue.as_str().into());
    raw.archive_url = Some(
        settings
            .archive_url
            .as_ref()
            .map_or_else(|| "none".into(), url::Url::to_string),
    );
    raw.templates_dir = Some(settings.templates_dir.clone());
    raw
}

/// Checks the settings and reaches each backend `roles` use: a worker never reads the API token,
/// and an API process never delivers or archives, so each passes with its own permissions.
async fn check(settings: Settings, roles: Roles) -> anyhow::Result<()> {
    let mut failed = 0;
    let mut report = |name: &str, result: Result<String, String>| match result {
        Ok(detail) => println!("ok    {name}: {detail}"),
        Err(e) => {
            failed += 1;
            println!("FAIL  {name}: {e}");
        }
    };
    let unused = |role: &str| Ok(format!("not used by the {role}"));
    report("config", Ok("settings are valid".into()));
    if let (true, crate::config::TokenSettings::Generated(path)) = (roles.api, &settings.token)
        && !path.exists()
    {
        // Not made here: the first `serve` makes it and prints it with a curl command.
        report(
            "token",
            Ok(format!(
                "none saved yet; the first start makes one in {}",
                path.display()
            )),
        );
    } else if roles.api {
        report(
            "token",
            crate::startup::token(&settings)
                .await
                .map(|_| "configured".into())
                .map_err(|e| format!("{e:#}")),
        );
    } else {
        report("token", unused("worker"));
    }
    #[cfg(feature = "kafka")]
    if let Some(kafka) = &settings.kafka {
        let queue = settings.queue == crate::config::QueueBackend::Kafka;
        report(
            "kafka",
            crate::kafka::check(kafka, &crate::kafka::topics(kafka, queue)).await,
        );
    }
    let backends = match Backends::build(settings).await {
        Ok(b) => b,
        Err(e) => {
            report("backends", Err(format!("{e:#}")));
            bail!("{failed} check(s) failed");
        }
    };
    if roles.api {
        let dir = backends.settings.templates_dir.display().to_string();
        let loaded = backends.load_templates().map(|()| {
            let templates = backends.templates.current();
            let names: Vec<&str> = templates.names().collect();
            match names.len() {
                0 => format!("none ({dir} has none)"),
                n => format!("{n} loaded from {dir}: {}", names.join(", ")),
            }
        });
        report("templates", loaded.map_err(|e| format!("{e:#}")));
    } else {
        report("templates", unused("worker"));
    }
    report(
        "store",
        backends
            .store
            .ping()
            .await
            .map(|_| "reachable".into())
            .map_err(|e| e.to_string()),
    );
    report(
        "queue",
        backends
            .depth()
            .await
            .map(|d| {
                format!(
                    "{} reachable, {} message(s) waiting, {} scheduled for later",
                    backends.queue.name(),
                    d.messages,
                    d.scheduled
                )
            })
            .map_err(|e| e.to_string()),
    );
    // Redis, when set, is the API's idempotency cache as well as the workers' shared ceiling.
    match &backends.limiter {
        Some(limiter) => report(
            "rate limit",
            limiter
                .ping()
                .await
                .map(|_| format!("{}/s ceiling reachable", limiter.rate_per_second()))
                .map_err(|e| e.to_string()),
        ),
        None => report("rate limit", Ok("off".into())),
    }
    if roles.worker {
        report(
            "delivery",
            backends
                .delivery
                .check()
                .await
                .map(|_| format!("{} reachable", backends.delivery.name()))
                .map_err(|e| e.to_string()),
        );
        if let Some(archive) = &backends.archive {
            // Under `emails/`, where the archive writes, so a role allowed only that prefix passes
            // (the Terraform stack also allows deleting this one key).
            let probe = object_store::path::Path::from("emails/.mailroom-check");
            let store = archive.object_store();
            let result = async {
                store.put(&probe, "check".into()).await?;
                store.delete(&probe).await
            }
            .await;
            report(
                "archive",
                result.map(|_| "writable".into()).map_err(|e| e.to_string()),
            );
        } else {
            report("archive", Ok("off".into()));
        }
    } else {
        for name in ["delivery", "archive"] {
            report(name, unused("api"));
        }
    }
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

/// A plain HTTP/1.0 GET, so the container image needs no curl and the binary no HTTP client.
async fn healthcheck(addr: String) -> anyhow::Result<()> {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(&addr).await?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(std::time::Duration::from_secs(3), probe)
        .await
        .context("Health check timed out")?
        .with_context(|| format!("Health check could not reach {addr}"))?;
    if &head[9..12] != b"200" {
        bail!("Health check answered {}", String::from_utf8_lossy(&head));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of `input` as `read_line` gives it, with a limit of 4 bytes.
    async fn lines_of(input: &[u8]) -> Vec<(String, u64)> {
        let mut reader = tokio::io::BufReader::with_capacity(3, input);
        let (mut buf, mut out) = (Vec::new(), Vec::new());
        while let Some((line, taken)) = read_line(&mut reader, 4, &mut buf).await.expect("read") {
            let shown = match line {
                Line::Text(text) => text,
                Line::TooLong => "<too long>".into(),
                Line::NotUtf8 => "<not utf-8>".into(),
            };
            out.push((shown, taken));
        }
        out
    }

    #[tokio::test]
    async fn lines_over_the_limit_are_skipped_whole_and_the_next_read_as_usual() {
        let got = lines_of(b"abcd\nabcde\r\nabcdefghijk\n\xff\r\nab\r\n\nxyz").await;
        let want = [
            ("abcd", 5),
            ("<too long>", 7),
            ("<too long>", 12),
            ("<not utf-8>", 3),
            ("ab", 4),
            ("", 1),
            ("xyz", 3),
        ];
        let want: Vec<(String, u64)> = want.iter().map(|(l, n)| (l.to_string(), *n)).collect();
        assert_eq!(got, want);
        assert_eq!(lines_of(b"abcdefgh").await, [("<too long>".into(), 8)]);
        assert_eq!(lines_of(b"abcd\r\n").await, [("abcd".into(), 6)]);
    }
}
