//! `mailroom check` (every backend a role uses, reached with that role's permissions) and
//! `mailroom healthcheck` (the container's probe).

use anyhow::{Context, bail};
use object_store::ObjectStoreExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Settings;
use crate::startup::{Backends, Roles};

/// Checks the settings and reaches each backend `roles` use: a worker never reads the API token,
/// and an API process never delivers or archives, so each passes with its own permissions.
pub(super) async fn check(settings: Settings, roles: Roles) -> anyhow::Result<()> {
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
pub(super) async fn healthcheck(addr: String) -> anyhow::Result<()> {
    let addr = addr
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
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
        .with_context(|| format!("Health check could not reach {addr} (expected host:port)"))?;
    if &head[9..12] != b"200" {
        bail!("Health check answered {}", String::from_utf8_lossy(&head));
    }
    Ok(())
}
