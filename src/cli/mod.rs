//! The `mailroom` command line.
//!
//! Layout: this file holds the arguments, the dispatch and the small commands (the servers,
//! `status`, `cancel`, `dead-letters`, `config`, `migrate`); `send.rs` queues messages from the
//! command line or a JSONL file; `check.rs` holds the diagnostics (`check`, `healthcheck`).

mod check;
mod send;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use secrecy::ExposeSecret;
use serde_json::json;
use uuid::Uuid;

use crate::config::{RawConfig, Settings};
use crate::message::Status;
use crate::startup::{Application, Backends, Roles, shutdown_on_signals};
use crate::store::ListFilter;
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
        /// host:port to probe (`http://` in front is allowed); defaults to METRICS_PORT when set,
        /// else PORT, on BIND_ADDRESS (127.0.0.1 for a wildcard bind).
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
        /// Message ids; each is tried, and each that could not be redriven (not dead, unknown,
        /// not an id) is named.
        ids: Vec<String>,
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
    let command = match cli.command {
        // Before the settings: only its ports are read, and none when the address is given.
        Command::Healthcheck { addr } => {
            let addr = match addr {
                Some(addr) => addr,
                None => local_addr(RawConfig::health_addr(cli.config.as_deref())?).to_string(),
            };
            return check::healthcheck(addr).await;
        }
        command => command,
    };
    let settings = Settings::load(cli.config.as_deref()).await?;
    telemetry::init_logs(settings.log_json);
    match command {
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
        Command::Send(args) => {
            if let Some(path) = missing_database(&settings) {
                eprintln!(
                    "No database at {} yet: a new one is made. `mailroom serve` delivers these messages when it runs with the same DATA_DIR ({}).",
                    path.display(),
                    settings.data_dir.display()
                );
            }
            send::send(settings, args).await
        }
        Command::Status { id } => {
            refuse_missing_database(&settings)?;
            status(settings, id).await
        }
        Command::Cancel { id } => {
            refuse_missing_database(&settings)?;
            let backends = Backends::build(settings).await?;
            backends.intake.cancel(id).await?;
            println!("{id} cancelled");
            Ok(())
        }
        Command::DeadLetters(cmd) => {
            refuse_missing_database(&settings)?;
            dead_letters(settings, cmd).await
        }
        Command::Check { role } => check::check(settings, role.roles()).await,
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
        Command::Healthcheck { .. } => unreachable!("answered above, without the settings"),
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

/// The SQLite file of the settings, when it does not exist: a command that reads or changes
/// messages, run outside the directory `serve` runs in (DATA_DIR is relative by default), would
/// otherwise make a new, empty database and work on that.
fn missing_database(settings: &Settings) -> Option<PathBuf> {
    use std::str::FromStr;
    let url = settings.database_url.expose_secret();
    // Only a SQLite file: sqlx's SQLite options take any text as a file name (a PostgreSQL URL
    // among them, password included), and an in-memory database has no file.
    if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    (!path.as_os_str().is_empty() && !path.exists()).then(|| path.to_path_buf())
}

fn refuse_missing_database(settings: &Settings) -> anyhow::Result<()> {
    if let Some(path) = missing_database(settings) {
        bail!(
            "No database at {}: run this where `mailroom serve` runs, or set DATA_DIR (or DATABASE_URL) to what it uses",
            path.display()
        );
    }
    Ok(())
}

/// Where a local client reaches a server bound to `addr`: 127.0.0.1 for a wildcard bind.
fn local_addr(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// The URL a local client reaches `addr` at; an IPv6 address in brackets (`http://[::1]:8080`).
fn local_url(addr: std::net::SocketAddr) -> String {
    format!("http://{}", local_addr(addr))
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
            let total = backends.store.dead_letters().await?;
            eprintln!(
                "{} of {total} dead letter(s) shown (newest first, --limit {limit})",
                records.len()
            );
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
                    ids.extend(page.iter().map(|r| r.message.id.to_string()));
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
                let Ok(uuid) = Uuid::parse_str(id) else {
                    failed += 1;
                    eprintln!("{id} not redriven: not a message id");
                    continue;
                };
                match backends.intake.redrive(uuid).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a SQLite file that does not exist is a missing database: not a PostgreSQL URL (whose
    /// text would otherwise be taken as a file name, and printed, password and all), not an
    /// in-memory database, not a file that exists.
    #[test]
    fn only_a_sqlite_file_can_be_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let existing = dir.path().join("here.db");
        std::fs::write(&existing, b"").expect("written");
        let with = |url: &str| {
            let settings = crate::config::RawConfig {
                data_dir: dir.path().to_path_buf(),
                database_url: Some(url.to_string().into()),
                ..crate::config::RawConfig::default()
            }
            .into_settings()
            .expect("valid settings");
            missing_database(&settings)
        };
        assert_eq!(with("postgres://mailroom:pw@db:5432/mailroom"), None);
        assert_eq!(with("sqlite::memory:"), None);
        assert_eq!(with(&format!("sqlite://{}", existing.display())), None);
        let absent = dir.path().join("absent.db");
        assert_eq!(
            with(&format!("sqlite://{}?mode=rwc", absent.display())),
            Some(absent)
        );
    }

    /// The printed URL is one a client can paste: a wildcard bind is reached on 127.0.0.1, and
    /// an IPv6 address is written in brackets.
    #[test]
    fn printed_urls_can_be_pasted() {
        let url = |a: &str| local_url(a.parse().expect("an address"));
        assert_eq!(url("0.0.0.0:8080"), "http://127.0.0.1:8080");
        assert_eq!(url("[::]:8080"), "http://127.0.0.1:8080");
        assert_eq!(url("10.0.0.5:8080"), "http://10.0.0.5:8080");
        assert_eq!(url("[::1]:8080"), "http://[::1]:8080");
    }
}
