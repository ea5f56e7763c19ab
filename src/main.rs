//! The `imds-tun` command line: thin; every command is a call into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use imds_tun::config::{self, Config};
use imds_tun::snapshot::{Keys, Snapshot, SnapshotCell};

#[derive(Parser)]
#[command(
    name = "imds-tun",
    version,
    about = "Cloud instance metadata (Azure IMDS, GCE, AWS EC2) for any Linux machine"
)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve metadata on kernel sockets (no root needed).
    ///
    /// Example: imds-tun serve --listen 127.0.0.1:8080
    Serve {
        /// Configuration file (default: the embedded default with all three clouds).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on; repeatable.
        #[arg(long, short, required = true)]
        listen: Vec<SocketAddr>,
    },
    /// Validate a configuration file; exit 0 only when it is valid.
    ///
    /// Example: imds-tun check /etc/imds-tun/config.json
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the embedded default configuration, a starting point for your own.
    DefaultConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("imds-tun: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { file } => match config::load_file(&file, &config::process_env) {
            Ok(c) => {
                let snapshot = Snapshot::build(c, &Keys::fixed(0), &file.display().to_string());
                match snapshot {
                    Ok(_) => {
                        println!("{}: valid", file.display());
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        Ok(ExitCode::FAILURE)
                    }
                }
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::DefaultConfig => {
            print!("{}", config::DEFAULT_JSON);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { config, listen } => {
            let (cfg, source) = load(config.as_ref())?;
            let snapshot = Snapshot::build(cfg, &Keys::generate()?, &source)?;
            serve(snapshot, &listen)
        }
    }
}

/// Loads the named file, or the embedded default, with environment overrides.
fn load(path: Option<&PathBuf>) -> anyhow::Result<(Config, String)> {
    match path {
        Some(p) => Ok((
            config::load_file(p, &config::process_env)?,
            p.display().to_string(),
        )),
        None => Ok((
            config::default_config(&config::process_env)?,
            config::DEFAULT_SOURCE.to_string(),
        )),
    }
}

fn serve(snapshot: Snapshot, listen: &[SocketAddr]) -> anyhow::Result<ExitCode> {
    let clouds = enabled_clouds(&snapshot.config);
    let cell = Arc::new(SnapshotCell::new(snapshot));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let listeners = imds_tun::listen::bind(listen).await?;
        let mut bound = Vec::new();
        for l in listeners {
            bound.push(l.local_addr()?);
            tokio::spawn(imds_tun::listen::serve(l, Arc::clone(&cell)));
        }
        let addrs: Vec<String> = bound.iter().map(|a| a.to_string()).collect();
        println!("imds-tun: serving {clouds} on {}", addrs.join(", "));
        wait_for_shutdown().await?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait_for_shutdown() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn enabled_clouds(c: &Config) -> String {
    let names: Vec<&str> = [
        (c.azure.enabled, "azure"),
        (c.gce.enabled, "gce"),
        (c.aws.enabled, "aws"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| *n)
    .collect();
    if names.is_empty() {
        "no cloud".into()
    } else {
        names.join(", ")
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IMDS_TUN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
