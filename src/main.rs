use clap::Parser;

/// Every request and delivery allocates many small, short-lived buffers (JSON, headers, SQL
/// batches) across threads; glibc's malloc spent a fifth of the ingest CPU on them, mimalloc far
/// less (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Several rustls crypto providers are compiled in; name one before any TLS is configured.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = mailroom::cli::Cli::parse();
    match mailroom::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
