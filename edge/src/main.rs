//! `vigil-edge`: the room appliance's command line.
//!
//! `vigil-edge run --config edge.toml` starts the recorder and the local API and prints
//! `edge api: URL` on standard output once it listens.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use vigil_edge::app::Appliance;
use vigil_edge::config::EdgeConfig;

#[derive(Debug, Parser)]
#[command(name = "vigil-edge", version, about = "Vigil room appliance")]
struct Cli {
    /// Log as JSON lines instead of readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Record sessions and serve the local API.
    Run {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and print it as understood.
    CheckConfig {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    vigil_edge::init_logging(cli.log_json);
    match cli.command {
        Command::Run { config } => {
            let config = EdgeConfig::load(&config)?;
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(run(config))
        }
        Command::CheckConfig { config } => {
            let config = EdgeConfig::load(&config)?;
            println!("{config:#?}");
            Ok(())
        }
    }
}

async fn run(config: EdgeConfig) -> anyhow::Result<()> {
    let appliance = Appliance::start(config).await?;
    println!("edge api: {}", appliance.api_url());
    println!("edge db: {}", appliance.db_path.display());
    wait_for_signal().await?;
    tracing::info!("stopping");
    appliance.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot watch Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
