//! The command line: `chatd serve`, `chatd token`, `chatd migrate`.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::Settings;
use crate::server;
use crate::state::{AppState, authenticator};

/// chatd — a real-time chat backend (REST, Socket.IO, WebSocket) for platforms that
/// already have users: sign a JWT per user, point clients at chatd.
#[derive(Debug, Parser)]
#[command(name = "chatd", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (zero config: SQLite in ./chatd-data, 127.0.0.1:3000).
    Serve(ServeArgs),
    /// Print a token for a user, signed with the server's key.
    Token(TokenArgs),
    /// Apply database migrations and exit (`serve` also does this at start).
    Migrate(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Log as JSON lines instead of text.
    #[arg(long, env = "CHATD_LOG_JSON")]
    log_json: bool,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The user id (the token's `sub`).
    user_id: String,
    /// Display name (the token's `name`).
    #[arg(long)]
    name: Option<String>,
    /// How long the token is valid, e.g. `30m`, `24h`, `7d`.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    #[command(flatten)]
    settings: Settings,
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_env("CHATD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Entry point of the binary.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_logging(args.log_json);
            let config = args.settings.resolve()?;
            runtime()?.block_on(async move {
                if config.dev {
                    tracing::warn!(
                        "DEVELOPMENT MODE: POST /api/dev/token hands out a token for any user. \
                         Never run --dev in production."
                    );
                }
                let bind = config.bind;
                let state = AppState::build(config).await?;
                let listener =
                    tokio::net::TcpListener::bind(bind).await.with_context(|| format!("binding {bind}"))?;
                tracing::info!(addr = %listener.local_addr()?, "chatd listening");
                server::serve(listener, state, server::shutdown_signal()).await?;
                tracing::info!("stopped");
                Ok(())
            })
        }
        Command::Token(args) => {
            let config = args.settings.resolve()?;
            let auth = authenticator(&config)?;
            let token = auth.mint(&args.user_id, args.name, args.ttl)?;
            println!("{token}");
            Ok(())
        }
        Command::Migrate(args) => {
            init_logging(args.log_json);
            let config = args.settings.resolve()?;
            runtime()?.block_on(async move {
                AppState::build(config).await?;
                tracing::info!("migrations applied");
                Ok(())
            })
        }
    }
}

/// Most blocking threads: they only run store reads, which share a handful of SQLite
/// connections, so more threads would just wait (each costing a stack and allocator caches:
/// a burst of handshakes grew 80+ of them).
const MAX_BLOCKING_THREADS: usize = 16;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("starting the Tokio runtime")
}
