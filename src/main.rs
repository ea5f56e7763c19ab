//! The `imds-tun` command line: thin; every command is a call into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use imds_tun::config::doors::DoorFlags;
use imds_tun::config::{self, Config};
use imds_tun::control::edit::Cloud;
use imds_tun::control::protocol::Request;
use imds_tun::control::server::ControlSocket;
use imds_tun::control::Control;
use imds_tun::device::Paths;
use imds_tun::doors::Doors;
use imds_tun::engine::up::{self, FaultSpec, UpOptions};
use imds_tun::identity::{IdentityKeys, Leaf};
use imds_tun::snapshot::{Keys, Snapshot, SnapshotCell};
use imds_tun::{access_log, metrics};

/// `--version`: the crate version and the commit it was built from (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("IMDS_TUN_COMMIT"),
    ")"
);

/// The exit codes, in `--help` and the README.
const EXIT_CODES: &str = "\
Exit codes:
  0  success (status: running)
  1  failure: invalid configuration, not privileged, a runtime error
     (status: not running, but a killed run left changes behind: run `imds-tun down`)
  2  usage error (unknown option, missing argument)
  3  status: not running

Environment:
  IMDS_TUN_LOG  log filter (tracing EnvFilter syntax), default `info`, e.g. `imds_tun=debug`";

#[derive(Parser)]
#[command(
    name = "imds-tun",
    version = VERSION,
    about = "Cloud instance metadata (Azure IMDS, GCE, AWS EC2) for any Linux machine",
    after_help = EXIT_CODES,
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
    /// SIGHUP reloads the configuration file. With --ctl, `imds-tun ctl --socket PATH ...`
    /// reads and edits the metadata while it runs.
    #[command(after_help = "\
Examples:
  imds-tun serve --listen 127.0.0.1:8080
  curl -H Metadata:true 'http://127.0.0.1:8080/metadata/instance?api-version=2021-02-01'
  imds-tun serve --listen 127.0.0.1:8080 --config my.json --metrics 127.0.0.1:9100
  imds-tun serve --listen 127.0.0.1:8080 --access-log - --log-format json
  imds-tun serve --listen 127.0.0.1:8080 --ctl /tmp/imds-tun.sock")]
    Serve {
        /// Configuration file (default: the embedded default with all three clouds).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on; repeatable.
        #[arg(long, short, required = true)]
        listen: Vec<SocketAddr>,
        /// Open the control socket (mode 0600) at this path; none without it.
        #[arg(long)]
        ctl: Option<PathBuf>,
        #[command(flatten)]
        doors: DoorArgs,
        #[command(flatten)]
        keys: KeyArgs,
        #[command(flatten)]
        observe: ObserveArgs,
    },
    /// Validate a configuration file; exit 0 only when it is valid.
    #[command(after_help = "\
Examples:
  imds-tun check /etc/imds-tun/config.json
  imds-tun default-config > my.json && imds-tun check my.json")]
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Serve metadata at 169.254.169.254 to every process on this host (root).
    ///
    /// Creates a TUN device, routes the metadata addresses to it, adds the GCE names to
    /// /etc/hosts, and answers with its own TCP. SIGINT/SIGTERM undo everything; SIGHUP
    /// reloads the configuration file; `imds-tun ctl ...` edits it live through the control
    /// socket <state-dir>/ctl.sock.
    #[command(after_help = "\
Examples:
  sudo imds-tun up
  sudo imds-tun up --config /etc/imds-tun/config.json --metrics 127.0.0.1:9100
  sudo imds-tun up --himds --access-log /var/log/imds-tun-access.log
  sudo kill -HUP $(pidof imds-tun)    # reload the configuration
  sudo imds-tun ctl set gce instance/attributes/role=web")]
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
        /// The control socket (default: <state-dir>/ctl.sock).
        #[arg(long)]
        ctl: Option<PathBuf>,
        #[command(flatten)]
        paths: PathArgs,
        #[command(flatten)]
        doors: DoorArgs,
        #[command(flatten)]
        keys: KeyArgs,
        #[command(flatten)]
        observe: ObserveArgs,
    },
    /// Undo what a crashed or killed `up` left behind (device, routes, hosts block, lock).
    ///
    /// Idempotent: exits 0 and says "nothing to do" on a clean host.
    #[command(after_help = "\
Examples:
  sudo imds-tun down
  sudo imds-tun down --device imds1 --state-dir /run/imds-tun")]
    Down {
        /// TUN device name.
        #[arg(long, default_value = "imds0")]
        device: String,
        #[command(flatten)]
        paths: PathArgs,
    },
    /// Print the embedded default configuration, a starting point for your own.
    #[command(after_help = "\
Examples:
  imds-tun default-config > /etc/imds-tun/config.json")]
    DefaultConfig,
    /// Control a running instance (`up`, or `serve --ctl`): live edits, events, faults, status
    ///
    /// Read and edit metadata live, schedule events, inject faults, reload, status. Needs root
    /// (the socket is 0600).
    ///
    /// Examples:
    ///   imds-tun ctl set gce instance/attributes/role=web
    ///   imds-tun ctl set aws tags/instance/Name=web --persist
    ///   imds-tun ctl set azure compute/tagsList '[{"name":"env","value":"test"}]'
    ///   imds-tun ctl get gce instance/attributes/role
    ///   imds-tun ctl delete gce instance/attributes/role
    ///   imds-tun ctl event azure --type Reboot --not-before +5m --duration 300
    ///   imds-tun ctl event aws --spot terminate --in 2m
    ///   imds-tun ctl event list
    ///   imds-tun ctl fault add azure /metadata/identity/oauth2/token --status 429 --count 1
    ///   imds-tun ctl reload
    ///   imds-tun ctl --json status
    #[command(verbatim_doc_comment)]
    Ctl {
        /// The control socket (default: <state-dir>/ctl.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// `up`'s state directory, where its control socket is.
        #[arg(long, default_value = "/run/imds-tun")]
        state_dir: PathBuf,
        /// Print the whole response as one line of JSON.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Summarise a running `up` (or, with --metrics, a `serve`): pid, routes, request counts.
    ///
    /// Reads the state directory (root, as `up` made it 0700) and scrapes the metrics endpoint
    /// the record names. Exit 0 when running, 3 when not, 1 when a killed run left changes.
    #[command(after_help = "\
Examples:
  sudo imds-tun status
  imds-tun status --metrics 127.0.0.1:9100")]
    Status {
        /// TUN device name.
        #[arg(long, default_value = "imds0")]
        device: String,
        /// Directory of the state record and lock.
        #[arg(long, default_value = "/run/imds-tun")]
        state_dir: PathBuf,
        /// Scrape this metrics endpoint (default: the one `up` recorded).
        #[arg(long, value_name = "ADDR:PORT")]
        metrics: Option<SocketAddr>,
    },
    /// Print a shell completion script.
    #[command(after_help = "\
Examples:
  imds-tun completions bash > /etc/bash_completion.d/imds-tun
  imds-tun completions zsh > ~/.zfunc/_imds-tun
  imds-tun completions fish > ~/.config/fish/completions/imds-tun.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff).
    #[command(after_help = "\
Examples:
  imds-tun man > /usr/local/share/man/man1/imds-tun.1
  imds-tun man | man -l -")]
    Man,
    /// Print the JWKS document that verifies minted tokens (also served at /imds-tun/jwks).
    #[command(after_help = "\
Examples:
  imds-tun jwks > jwks.json
  curl http://169.254.169.254/imds-tun/jwks")]
    Jwks {
        /// Configuration file (its `identity` section names the keys).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Print the CA certificate (PEM) that issued the signers of attested documents (also
    /// served at /imds-tun/ca.pem), or with --leaf one of the signing certificates.
    #[command(after_help = "\
Examples:
  imds-tun ca > ca.pem
  openssl cms -verify -inform DER -in doc.der -CAfile <(imds-tun ca)
  imds-tun ca --leaf aws")]
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

/// What `imds-tun ctl` asks.
#[derive(Subcommand)]
enum CtlAction {
    /// Print the configured value at a metadata path, e.g. `gce instance/attributes/role`.
    Get {
        /// azure, gce or aws.
        cloud: Cloud,
        /// The metadata path, with or without the service's prefix.
        path: String,
    },
    /// Set a value: `set gce instance/attributes/role=web` or `set gce PATH VALUE`.
    ///
    /// Validated like the configuration file; an invalid value changes nothing.
    Set {
        /// azure, gce or aws.
        cloud: Cloud,
        /// PATH=VALUE, or PATH followed by VALUE.
        assignment: String,
        value: Option<String>,
        /// Also write the edited configuration to its file.
        #[arg(long)]
        persist: bool,
    },
    /// Remove a tag or an attribute.
    Delete {
        /// azure, gce or aws.
        cloud: Cloud,
        path: String,
        /// Also write the edited configuration to its file.
        #[arg(long)]
        persist: bool,
    },
    /// Schedule, list or cancel events: Azure scheduled events, AWS spot interruptions,
    /// maintenance and lifecycle state, GCE maintenance-event and preempted.
    ///
    /// Events show to clients as on a real VM and move along in time by themselves; a reload
    /// keeps them.
    #[command(after_help = EVENT_HELP, disable_help_flag = true)]
    Event(LiveWords),
    /// Add, list or clear injected faults: a status with the cloud's own error body, latency,
    /// or a dropped connection, on a path, for a count of requests or a while.
    #[command(after_help = FAULT_HELP, disable_help_flag = true)]
    Fault(LiveWords),
    /// Re-read the configuration file (as SIGHUP); unpersisted edits are dropped.
    Reload,
    /// Uptime, open connections, requests per cloud, tokens issued, events and faults.
    Status,
}

/// The words of `ctl event ...` and `ctl fault ...`, read by `imds_tun::live::command` (here,
/// to refuse a mistake before sending, and by the server).
#[derive(clap::Args)]
struct LiveWords {
    /// The command's words, in one of the forms below.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

const EVENT_HELP: &str = "\
Forms:
  event azure [--type Reboot|Redeploy|Freeze|Preempt|Terminate] [--not-before WHEN]
              [--duration SECS|-1] [--resources A,B] [--description TEXT]
              [--source Platform|User] [--id UUID]
  event aws --spot stop|terminate|hibernate [--in DUR | --at WHEN] [--notice WHEN]
  event aws --maintenance CODE [--not-before WHEN] [--not-after WHEN | --duration DUR]
            [--description TEXT] [--id instance-event-...]
  event aws --lifecycle STATE [--in DUR]
  event gce --maintenance NONE|MIGRATE_ON_HOST_MAINTENANCE|TERMINATE_ON_HOST_MAINTENANCE
            [--in DUR] [--duration DUR]
  event gce --preempted [--in DUR]
  event list
  event cancel ID          (an Azure EventId, an AWS instance-event id, spot, gce)
WHEN: +5m, 90s, 2026-01-01T00:00:00Z or an RFC 1123 time; DUR: 500ms, 90s, 5m, 2h.
Azure's notice defaults to its minimum per type (Reboot 15 min, Preempt 30 s, ...).

Examples:
  sudo imds-tun ctl event azure --type Reboot --not-before +5m --duration 300
  sudo imds-tun ctl event aws --spot terminate --in 2m
  sudo imds-tun ctl event aws --maintenance system-reboot --not-before +1h --duration 2h
  sudo imds-tun ctl event gce --maintenance MIGRATE_ON_HOST_MAINTENANCE --duration 60s
  sudo imds-tun ctl event list
  sudo imds-tun ctl event cancel spot";

const FAULT_HELP: &str = "\
Forms:
  fault add [azure|gce|aws] PATH [--prefix]
            (--status 404|410|429|500|502|503|504 [--retry-after SECS] | --latency DUR
             | --drop [reset|close]) [--count N] [--for DUR]
  fault list
  fault clear [ID]
Without a cloud the rule matches PATH whoever owns it; --prefix matches every path under it.
A rule ends after --count requests or --for a while (else when cleared).

Examples:
  sudo imds-tun ctl fault add azure /metadata/identity/oauth2/token --status 429 --count 1
  sudo imds-tun ctl fault add aws /latest/meta-data/ --prefix --latency 2s
  sudo imds-tun ctl fault add gce /computeMetadata/v1/instance/zone --drop --for 70s
  sudo imds-tun ctl fault list
  sudo imds-tun ctl fault clear";

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
    fn flags(&self) -> DoorFlags {
        DoorFlags {
            himds: self.himds,
            app_service: self.app_service,
            legacy_msi: self.legacy_msi,
        }
    }
}

/// Metrics and the access log.
#[derive(clap::Args)]
struct ObserveArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (loopback only unless --metrics-any).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    /// Allow --metrics on a non-loopback address (the metrics name identities and callers).
    #[arg(long, requires = "metrics")]
    metrics_any: bool,
    /// Write one line per answered request to PATH (appended), or to standard output with
    /// `-`: time, caller, cloud, class, method, path and query, status, microseconds. Never
    /// headers, bodies or tokens. Lines are JSON with --log-format json.
    #[arg(long, value_name = "PATH|-")]
    access_log: Option<PathBuf>,
}

impl ObserveArgs {
    /// Installs the access log and starts the metrics endpoint, before anything is served;
    /// the endpoint's address.
    fn start(&self, format: LogFormat) -> anyhow::Result<Option<SocketAddr>> {
        metrics::global()
            .gauge(
                "imds_tun_build_info",
                "Always 1; the labels say which build runs.",
                &[
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("commit", env!("IMDS_TUN_COMMIT")),
                ],
            )
            .set(1);
        if let Some(path) = &self.access_log {
            let format = match format {
                LogFormat::Text => access_log::Format::Text,
                LogFormat::Json => access_log::Format::Json,
            };
            let log = access_log::AccessLog::open(path, format)
                .with_context(|| format!("--access-log {}", path.display()))?;
            access_log::install(log);
        }
        match self.metrics {
            Some(addr) => Ok(Some(metrics::endpoint::start(
                addr,
                self.metrics_any,
                metrics::global(),
            )?)),
            None => Ok(None),
        }
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
    match run(cli.command, cli.log_format) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("imds-tun: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, log_format: LogFormat) -> anyhow::Result<ExitCode> {
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
        Command::Status {
            device,
            state_dir,
            metrics,
        } => {
            let status = imds_tun::status::gather(&state_dir, &device, metrics);
            print!("{status}");
            Ok(ExitCode::from(status.exit_code()))
        }
        Command::Completions { shell } => {
            let mut cli = Cli::command();
            clap_complete::generate(shell, &mut cli, "imds-tun", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Up {
            config,
            device,
            threads,
            pcap,
            fault,
            ctl,
            paths,
            doors,
            keys,
            observe,
        } => {
            // Before the key store is opened, so an unprivileged run says only that.
            up::require_privileges()?;
            let (snapshot, keys) = prepare(config.as_ref(), &doors, &keys)?;
            let metrics = observe.start(log_format)?;
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
                metrics,
                doors: doors.flags(),
                ctl,
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
            ctl,
            doors,
            keys,
            observe,
        } => {
            let (snapshot, key_set) = prepare(config.as_ref(), &doors, &keys)?;
            observe.start(log_format)?;
            serve(snapshot, key_set, &listen, config, doors.flags(), ctl)
        }
        Command::Ctl {
            socket,
            state_dir,
            json,
            action,
        } => {
            let socket = socket.unwrap_or_else(|| state_dir.join(up::CTL_SOCKET));
            ctl(&socket, json, action)
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
    doors.flags().apply(&mut cfg);
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

fn serve(
    snapshot: Snapshot,
    keys: Keys,
    listen: &[SocketAddr],
    config_file: Option<PathBuf>,
    doors: DoorFlags,
    ctl: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let clouds = up::clouds(&snapshot.config);
    let config = Arc::clone(&snapshot.config);
    let cell = Arc::new(SnapshotCell::new(snapshot));
    imds_tun::live::ticker::spawn(&cell).context("cannot start the live-state thread")?;
    let control = Arc::new(Control::new(
        "serve",
        Arc::clone(&cell),
        keys.clone(),
        doors,
        config_file,
    )?);
    let _socket = match &ctl {
        Some(path) => Some(
            ControlSocket::bind(path, Arc::clone(&control))
                .with_context(|| format!("cannot open the control socket {}", path.display()))?,
        ),
        None => None,
    };
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
            &keys,
            &cell,
            &tokio::runtime::Handle::current(),
            None,
        )?;
        println!("imds-tun: serving {clouds} on {}", addrs.join(", "));
        imds_tun::notify::notify_or_log("READY=1");
        // Whoever started us may read only the first line: a closed stdout is no failure.
        let mut out = std::io::stdout();
        for line in doors.env_lines() {
            let _ = std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes());
        }
        let result = wait_for_shutdown(&control).await;
        imds_tun::fleet::log_counts(&cell.load());
        imds_tun::notify::notify_or_log("STOPPING=1");
        for line in doors.close() {
            tracing::info!("undone: {line}");
        }
        result?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Waits for SIGTERM or SIGINT, reloading the configuration on each SIGHUP meanwhile.
async fn wait_for_shutdown(control: &Control) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            // Logged by `reload` itself, success or failure.
            _ = hup.recv() => { let _ = control.reload(); }
        }
    }
}

/// `imds-tun ctl`: one request to the control socket; the answer on stdout, or one line on
/// stderr and exit 1.
fn ctl(socket: &std::path::Path, json: bool, action: CtlAction) -> anyhow::Result<ExitCode> {
    let request = match action {
        CtlAction::Get { cloud, path } => Request::Get { cloud, path },
        CtlAction::Set {
            cloud,
            assignment,
            value,
            persist,
        } => {
            let (path, value) = match value {
                Some(v) => (assignment, v),
                None => match assignment.split_once('=') {
                    Some((p, v)) => (p.to_string(), v.to_string()),
                    None => {
                        anyhow::bail!("set: expected PATH=VALUE or PATH VALUE, got `{assignment}`")
                    }
                },
            };
            Request::Set {
                cloud,
                path,
                value,
                persist,
            }
        }
        CtlAction::Delete {
            cloud,
            path,
            persist,
        } => Request::Delete {
            cloud,
            path,
            persist,
        },
        CtlAction::Event(LiveWords { args }) => match live_words("event", &args) {
            Some(code) => return code,
            None => Request::Event { args },
        },
        CtlAction::Fault(LiveWords { args }) => match live_words("fault", &args) {
            Some(code) => return code,
            None => Request::Fault { args },
        },
        CtlAction::Reload => Request::Reload {},
        CtlAction::Status => Request::Status {},
    };
    let response = imds_tun::control::client::call(socket, &request)?;
    if json {
        println!("{}", serde_json::to_string(&response)?);
    }
    if !response.ok {
        let message = response.error.as_deref().unwrap_or("failed");
        eprintln!("imds-tun: {message}");
        return Ok(ExitCode::FAILURE);
    }
    if !json {
        let result = response.result.unwrap_or_default();
        match (&request, &result) {
            (Request::Status {}, r) => print_status(r),
            (Request::Delete { .. }, _) => println!("deleted"),
            (Request::Event { .. } | Request::Fault { .. }, r) => print_live(r),
            (_, serde_json::Value::String(s)) => println!("{s}"),
            (_, other) => println!("{other}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks `ctl event|fault ARGS` here, with the parser the server uses, so a mistyped
/// command is a usage error (exit 2) even with no instance running. `Some` is the exit when
/// there is nothing to send: the help, or a usage error.
fn live_words(noun: &str, args: &[String]) -> Option<anyhow::Result<ExitCode>> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        let mut cli = Cli::command();
        // Built, the subcommand's usage line names the whole command (`imds-tun ctl event`).
        cli.build();
        let sub = cli
            .find_subcommand_mut("ctl")
            .and_then(|c| c.find_subcommand_mut(noun))?;
        return Some(
            sub.print_long_help()
                .map(|()| ExitCode::SUCCESS)
                .map_err(Into::into),
        );
    }
    let words: Vec<&str> = std::iter::once(noun)
        .chain(args.iter().map(String::as_str))
        .collect();
    match imds_tun::live::command::parse(&words) {
        Ok(_) => None,
        Err(e) => {
            eprintln!("imds-tun: {noun}: {e} (see imds-tun ctl {noun} --help)");
            Some(Ok(ExitCode::from(2)))
        }
    }
}

/// `ctl event` and `ctl fault` results: one line per event or rule (its id, then
/// `key=value`s), or what was cancelled or cleared.
fn print_live(result: &serde_json::Value) {
    use serde_json::Value;
    let line = |v: &Value| -> String {
        let Value::Object(m) = v else {
            return v.to_string();
        };
        let mut parts = Vec::with_capacity(m.len());
        for (k, v) in m {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            parts.push(if k == "id" {
                text
            } else {
                format!("{k}={text}")
            });
        }
        parts.join(" ")
    };
    match result {
        Value::Array(items) => items.iter().for_each(|i| println!("{}", line(i))),
        Value::Object(m) if m.contains_key("cancelled") => {
            println!("cancelled {}", m["cancelled"].as_str().unwrap_or("?"))
        }
        Value::Object(m) if m.contains_key("cleared") => {
            let n = m["cleared"].as_u64().unwrap_or(0);
            println!("{n} fault{} cleared", if n == 1 { "" } else { "s" })
        }
        other => println!("{}", line(other)),
    }
}

fn print_status(s: &serde_json::Value) {
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let r = &s["requests"];
    println!(
        "{} for {} s, configuration {}",
        s["mode"].as_str().unwrap_or("?"),
        n(&s["uptime_secs"]),
        s["config"].as_str().unwrap_or("?")
    );
    println!(
        "connections open {}, requests parked {}",
        n(&s["connections_open"]),
        n(&s["requests_parked"])
    );
    println!(
        "requests: azure {}, gce {}, aws {}, other {}",
        n(&r["azure"]),
        n(&r["gce"]),
        n(&r["aws"]),
        n(&r["other"])
    );
    println!("tokens issued {}", n(&s["tokens_issued"]));
    println!(
        "events current {} (scheduled {}), fault rules {}, faults injected {}",
        n(&s["events_current"]),
        n(&s["events_scheduled"]),
        n(&s["fault_rules"]),
        n(&s["faults_injected"])
    );
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
