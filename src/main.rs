use clap::Parser;

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
