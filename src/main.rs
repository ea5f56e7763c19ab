//! The `imds-tun` command line: thin; every command is a call into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use imds_tun::config::{self, Config};
use imds_tun::device::Paths;
use imds_tun::doors::Doors;
use imds_tun::engine::up::{self, FaultSpec, UpOptions};
use imds_tun::identity::{IdentityKeys, Leaf};
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

// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
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
        #[command(flatten)]
        doors: DoorArgs,
        #[command(flatten)]
        keys: KeyArgs,
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
        #[command(flatten)]
        doors: DoorArgs,
        #[command(flatten)]
        keys: KeyArgs,
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
    /// Print the JWKS document that verifies minted tokens (also served at /imds-tun/jwks).
    ///
    /// Example: imds-tun jwks > jwks.json
    Jwks {
        /// Configuration file (its `identity` section names the keys).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Print the CA certificate (PEM) that issued the signers of attested documents (also
    /// served at /imds-tun/ca.pem), or with --leaf one of the signing certificates.
    ///
    /// Example: openssl cms -verify -inform DER -in doc.der -CAfile <(imds-tun ca)
    Ca {
        /// Configuration file (its `identity` section names the keys).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print this signing certificate instead of the CA.
        #[arg(long, value_enum)]
        leaf: Option<LeafArg>,
        #[command(flatten)]
        keys: KeyArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LeafArg {
    /// The attested-document signer (SAN *.metadata.azure.com).
    Azure,
    /// The instance-identity document signer.
    Aws,
}

/// Where the signing keys live.
#[derive(clap::Args)]
struct KeyArgs {
    /// Directory of the signing keys and CA (created 0700 on first use; default: the
    /// configuration's identity.keyDir, else /var/lib/imds-tun).
    #[arg(long)]
    key_dir: Option<PathBuf>,
}

impl KeyArgs {
    /// Opens (creating on first use) the key store the configuration and this flag name.
    fn open(&self, cfg: &Config) -> anyhow::Result<Arc<IdentityKeys>> {
        let dir = cfg.identity.key_dir(self.key_dir.as_deref());
        let keys = imds_tun::identity::store::open(&dir, cfg.identity.signing_key_file.as_deref())
            .with_context(|| format!("cannot open the key store in {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), kid = keys.kid(), "signing keys ready");
        Ok(Arc::new(keys))
    }
}

/// The token doors besides 169.254.169.254 (each also enabled by its configuration section).
#[derive(clap::Args)]
struct DoorArgs {
    /// Serve Azure Arc's HIMDS on localhost:40342, with its key-file challenge in
    /// /var/opt/azcmagent/tokens ($.azure.himds).
    #[arg(long)]
    himds: bool,
    /// Serve an App Service identity endpoint (IDENTITY_ENDPOINT + IDENTITY_HEADER;
    /// $.azure.appService).
    #[arg(long)]
    app_service: bool,
    /// Serve the legacy VM extension endpoint on localhost:50342 ($.azure.legacyMsi).
    #[arg(long)]
    legacy_msi: bool,
}

impl DoorArgs {
    fn apply(&self, cfg: &mut Config) {
        cfg.azure.himds.enabled |= self.himds;
        cfg.azure.app_service.enabled |= self.app_service;
        cfg.azure.legacy_msi.enabled |= self.legacy_msi;
    }
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
                    Ok(s) => {
                        println!("{}: valid", file.display());
                        for line in imds_tun::fleet::describe(&s.config.fleet) {
                            println!("{line}");
                        }
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
            doors,
            keys,
        } => {
            // Before the key store is opened, so an unprivileged run says only that.
            up::require_privileges()?;
            let (snapshot, keys) = prepare(config.as_ref(), &doors, &keys)?;
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
        Command::Serve {
            config,
            listen,
            doors,
            keys,
        } => {
            let (snapshot, keys) = prepare(config.as_ref(), &doors, &keys)?;
            serve(snapshot, &keys, &listen)
        }
        Command::Jwks { config, keys } => {
            let (cfg, _) = load(config.as_ref())?;
            println!("{}", keys.open(&cfg)?.jwks());
            Ok(ExitCode::SUCCESS)
        }
        Command::Ca { config, leaf, keys } => {
            let (cfg, _) = load(config.as_ref())?;
            let identity = keys.open(&cfg)?;
            let pem = match leaf {
                None => identity.ca_pem().to_string(),
                Some(which) => {
                    let which = match which {
                        LeafArg::Azure => Leaf::Azure,
                        LeafArg::Aws => Leaf::Aws,
                    };
                    x509_cert::der::EncodePem::to_pem(
                        identity.leaf(which),
                        x509_cert::der::pem::LineEnding::LF,
                    )?
                }
            };
            print!("{pem}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The snapshot to run with: the configuration, the doors the command line turns on, and
/// this run's keys.
fn prepare(
    config: Option<&PathBuf>,
    doors: &DoorArgs,
    key_args: &KeyArgs,
) -> anyhow::Result<(Snapshot, Keys)> {
    let (mut cfg, source) = load(config)?;
    doors.apply(&mut cfg);
    let keys = Keys::new(key_args.open(&cfg)?)?;
    let snapshot = Snapshot::build(cfg, &keys, &source)?;
    Ok((snapshot, keys))
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

fn serve(snapshot: Snapshot, keys: &Keys, listen: &[SocketAddr]) -> anyhow::Result<ExitCode> {
    let clouds = up::clouds(&snapshot.config);
    let config = Arc::clone(&snapshot.config);
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
        let doors = Doors::open(
            &config,
            keys,
            &cell,
            &tokio::runtime::Handle::current(),
            None,
        )?;
        println!("imds-tun: serving {clouds} on {}", addrs.join(", "));
        // Whoever started us may read only the first line: a closed stdout is no failure.
        let mut out = std::io::stdout();
        for line in doors.env_lines() {
            let _ = std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes());
        }
        let result = wait_for_shutdown().await;
        imds_tun::fleet::log_counts(&cell.load());
        for line in doors.close() {
            tracing::info!("undone: {line}");
        }
        result?;
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
