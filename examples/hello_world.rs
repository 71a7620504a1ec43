//! The loopback ceiling for `bench/run`: a bare axum server on the same runtime as mailroom
//! (tokio multi-thread, `#[tokio::main]`), with no middleware, no parsing and no storage.
//! Whatever mailroom's ingest reaches is compared with what this reaches on the same machine,
//! with the same load tool and the same concurrency.
//!
//! `cargo run --release --example hello_world -- [PORT]`, or `HELLO_PORT=PORT`; it listens on
//! 127.0.0.1 (port 0 picks a free one, printed on start) and stops on Ctrl-C or SIGTERM.

use axum::Router;
use axum::body::Bytes;
use axum::routing::get;

/// The body both routes answer with: about the size of mailroom's 202 body.
const BODY: &str = "{\"message_id\":\"hello\",\"status\":\"queued\"}";

async fn hello() -> &'static str {
    BODY
}

/// Reads the request body, as any real handler must, then answers.
async fn hello_post(_body: Bytes) -> &'static str {
    BODY
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("HELLO_PORT").ok())
        .unwrap_or_else(|| "8090".into());
    let port: u16 = port.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the port {port:?} is not a number from 0 to 65535: {e}"),
        )
    })?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "hello_world is listening on http://{}",
        listener.local_addr()?
    );
    let app = Router::new().route("/", get(hello).post(hello_post));
    axum::serve(listener, app)
        .with_graceful_shutdown(stopped())
        .await
}

/// Resolves on Ctrl-C, or SIGTERM on Unix.
async fn stopped() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler succeeds on Unix");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
