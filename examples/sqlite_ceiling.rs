//! The SQLite ceiling for `bench/run`: the least a server can do that answers each request only
//! once the request is durable in SQLite, as mailroom's ingest does. The request body goes, as
//! it is, into a one-table database (WAL, `synchronous=FULL`) through one writer task that
//! commits whatever requests are waiting as one transaction (group commit, one sqlx statement
//! list per batch, as `mailroom api` does); each request is answered 202 after its commit. No
//! parsing, no validation, no middleware, one b-tree. Whatever mailroom's ingest reaches is
//! compared with this and with the hello-world, on the same machine with the same load.
//!
//! `cargo run --release --example sqlite_ceiling -- PORT DIR`: listens on 127.0.0.1:PORT (0 picks
//! a free one, printed on start) and keeps its database in DIR; stops on SIGTERM.

use std::str::FromStr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Executor};
use tokio::sync::{mpsc, oneshot};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Most requests committed in one transaction, as in mailroom's writer.
const MAX_BATCH: usize = 1024;

/// A request's row, encoded as a JSON object by the request, and where to say it is committed.
type Write = (String, oneshot::Sender<()>);

async fn accept(State(writer): State<mpsc::Sender<Write>>, body: Bytes) -> (StatusCode, String) {
    let id = uuid::Uuid::now_v7();
    let payload = String::from_utf8_lossy(&body);
    let row = serde_json::json!({"id": id.to_string(), "payload": payload}).to_string();
    let (done, committed) = oneshot::channel();
    let stored = writer.send((row, done)).await.is_ok() && committed.await.is_ok();
    if !stored {
        return (StatusCode::SERVICE_UNAVAILABLE, String::new());
    }
    (
        StatusCode::ACCEPTED,
        format!("{{\"message_id\":\"{id}\",\"status\":\"queued\"}}"),
    )
}

/// Commits each batch of waiting rows in one transaction, then answers their requests.
async fn write_loop(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Write>) {
    const INSERT: &str = "BEGIN IMMEDIATE;
        INSERT INTO messages (id, payload)
        SELECT value ->> 'id', value ->> 'payload' FROM jsonb_each(?1);
        COMMIT;";
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let rows: Vec<&str> = batch.iter().map(|(row, _)| row.as_str()).collect();
        let array = format!("[{}]", rows.join(","));
        if let Err(e) = sqlx::query(INSERT).bind(array).execute(&mut conn).await {
            eprintln!("sqlite_ceiling: commit failed: {e}");
            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
            batch.clear();
            continue;
        }
        for (_, done) in batch.drain(..) {
            let _ = done.send(());
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(dir)) = (args.next(), args.next()) else {
        return Err("usage: sqlite_ceiling PORT DIR".into());
    };
    let port: u16 = port
        .parse()
        .map_err(|e| format!("the port {port:?} is not a number from 0 to 65535: {e}"))?;
    std::fs::create_dir_all(&dir)?;
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{dir}/ceiling.db"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let mut conn = SqliteConnection::connect_with(&options).await?;
    conn.execute(
        "CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY NOT NULL, payload TEXT NOT NULL) \
         WITHOUT ROWID",
    )
    .await?;
    let (writer, rx) = mpsc::channel(8192);
    tokio::spawn(write_loop(conn, rx));

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "sqlite_ceiling is listening on http://{}",
        listener.local_addr()?
    );
    let app = Router::new()
        .route("/api/email", post(accept))
        .with_state(writer);
    axum::serve(listener, app).await?;
    Ok(())
}
