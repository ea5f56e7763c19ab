//! The `imds-tun` command line: thin; every command is a call into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use imds_tun::config::{self, Config};
use imds_tun::device::Paths;
use imds_tun::engine::up::{self, FaultSpec, UpOptions};
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
    /// Serve metadata at 169.254.169.254 to every process on this host (root).
    ///
    /// Creates a TUN device, routes the metadata addresses to it, adds the GCE names to
    /// /etc/hosts, and answers with its own TCP. SIGINT/SIGTERM undo everything; SIGHUP
    /// reloads the configuration file.
    ///
    /// Example: sudo imds-tun up --config /etc/imds-tun/config.json
    Up {
        /// Configuration file (default: the embedded default with all three clouds).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// TUN device name.
        #[arg(long, default_value = "imds0")]
        device: String,
        /// Engine threads (one TUN queue each); default: one per core.
        #[arg(long)]
        threads: Option<usize>,
        /// Write every packet to this pcap file (for Wireshark); implies one queue.
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// Inject faults on the device, e.g. `drop=0.05,dup=0.02,reorder=0.05,delay=0.1,max-delay=50ms,seed=7`.
        #[arg(long)]
        fault: Option<FaultSpec>,
        #[command(flatten)]
        paths: PathArgs,
    },
    /// Undo what a crashed or killed `up` left behind (device, routes, hosts block, lock).
    ///
    /// Idempotent: exits 0 and says "nothing to do" on a clean host.
    Down {
        /// TUN device name.
        #[arg(long, default_value = "imds0")]
        device: String,
        #[command(flatten)]
        paths: PathArgs,
    },
    /// Print the embedded default configuration, a starting point for your own.
    DefaultConfig,
}

/// Where `up` keeps its record and lock, and which hosts file it edits.
#[derive(clap::Args)]
struct PathArgs {
    /// Directory of the state record and lock.
    #[arg(long, default_value = "/run/imds-tun")]
    state_dir: PathBuf,
    /// The hosts file that gets the metadata.google.internal block.
    #[arg(long, default_value = "/etc/hosts")]
    hosts_file: PathBuf,
}

impl PathArgs {
    fn paths(&self) -> Paths {
        Paths {
            state_dir: self.state_dir.clone(),
            hosts_file: self.hosts_file.clone(),
        }
    }
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
        Command::Up {
            config,
            device,
            threads,
            pcap,
            fault,
            paths,
        } => {
            let (cfg, source) = load(config.as_ref())?;
            let keys = Keys::generate()?;
            let snapshot = Snapshot::build(cfg, &keys, &source)?;
            let threads = threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            let opts = UpOptions {
                device,
                threads,
                pcap,
                fault: fault.map(|f| f.0),
                paths: paths.paths(),
                config_file: config,
            };
            up::run(snapshot, keys, opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Down { device, paths } => {
            let report = imds_tun::device::down(&device, &paths.paths())?;
            println!("imds-tun: {report}");
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
    let clouds = up::clouds(&snapshot.config);
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
