//! The token doors on kernel sockets, besides 169.254.169.254: Azure Arc's HIMDS
//! (localhost:40342, with its key-file challenge), the App Service identity endpoint and the
//! legacy VM extension endpoint (localhost:50342). `up` and `serve` open the ones the
//! configuration (or `--himds`, `--app-service`, `--legacy-msi`) enables. (ECS container
//! credentials are a door too, but a routed address of the TUN device: see
//! [`crate::cloud::Door::ContainerCredentials`].)
//!
//! Contract: [`Doors::open`] binds every enabled door or fails without leaving anything
//! behind; the listeners run on the given tokio runtime and answer from the shared
//! [`SnapshotCell`], so a reload changes their answers but not their addresses or key
//! directory. [`Doors::env_lines`] are the shell lines that point SDKs at them.
//! [`Doors::close`] stops them and undoes what HIMDS created (key files, directories, the
//! group), returning one line per thing undone.

pub mod group;
pub mod himds_keys;
pub mod journal;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use himds_keys::HimdsKeys;

use crate::cloud::azure::app_service::{app_service_header, APP_SERVICE_PATH};
use crate::cloud::azure::legacy_msi::LEGACY_MSI_PATH;
use crate::cloud::Door;
use crate::config::doors::ECS_ADDRESS;
use crate::config::Config;
use crate::listen::{serve_door, FrontDoor};
use crate::snapshot::{Keys, SnapshotCell};

/// How often expired HIMDS key files are swept.
const EXPIRY_SWEEP: Duration = Duration::from_secs(5);

/// The open doors of one run.
pub struct Doors {
    himds: Option<(SocketAddr, Arc<HimdsKeys>)>,
    app_service: Option<(SocketAddr, String)>,
    legacy_msi: Option<SocketAddr>,
    ecs_relative_uri: Option<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Doors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doors")
            .field("himds", &self.himds.as_ref().map(|h| h.0))
            .field("app_service", &self.app_service.as_ref().map(|a| a.0))
            .field("legacy_msi", &self.legacy_msi)
            .finish_non_exhaustive()
    }
}

/// Why a door could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    #[error("cannot listen on {addr} for {door}: {source}")]
    Bind {
        door: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HIMDS key directory: {0}")]
    Keys(std::io::Error),
    #[error("{0} needs Azure on ($.azure.enabled)")]
    AzureOff(&'static str),
}

fn bind(door: &'static str, addr: SocketAddr) -> Result<tokio::net::TcpListener, DoorError> {
    let fail = |source| DoorError::Bind { door, addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(fail)?;
    std_listener.set_nonblocking(true).map_err(fail)?;
    tokio::net::TcpListener::from_std(std_listener).map_err(fail)
}

impl Doors {
    /// Opens the doors `config` enables, on `runtime`. `himds_journal` is where `up` records
    /// what the HIMDS door changes on the host ([`journal`]); `None` for `serve`.
    pub fn open(
        config: &Config,
        keys: &Keys,
        cell: &Arc<SnapshotCell>,
        runtime: &tokio::runtime::Handle,
        himds_journal: Option<std::path::PathBuf>,
    ) -> Result<Doors, DoorError> {
        let _entered = runtime.enter();
        let az = &config.azure;
        let mut doors = Doors {
            himds: None,
            app_service: None,
            legacy_msi: None,
            ecs_relative_uri: (config.aws.enabled && config.aws.container_credentials.enabled)
                .then(|| config.aws.container_credentials.relative_uri.clone()),
            tasks: Vec::new(),
        };
        let wanted = [
            (az.himds.enabled, "HIMDS"),
            (az.app_service.enabled, "the App Service door"),
            (az.legacy_msi.enabled, "the legacy MSI door"),
        ];
        if let Some((_, name)) = wanted.iter().find(|(on, _)| *on && !az.enabled) {
            return Err(DoorError::AzureOff(name));
        }
        // Bind everything first, so a failure leaves nothing behind.
        let himds = match az.himds.enabled {
            true => Some(bind("HIMDS", az.himds.listen)?),
            false => None,
        };
        let app = match az.app_service.enabled {
            true => Some(bind("App Service", az.app_service.listen)?),
            false => None,
        };
        let legacy = match az.legacy_msi.enabled {
            true => Some(bind("legacy MSI", az.legacy_msi.listen)?),
            false => None,
        };
        let spawn = |l: tokio::net::TcpListener, door: FrontDoor| {
            tokio::spawn(serve_door(l, Arc::clone(cell), door))
        };
        if let Some(l) = himds {
            let addr = l.local_addr().unwrap_or(az.himds.listen);
            let keys =
                Arc::new(HimdsKeys::open(&az.himds, himds_journal).map_err(DoorError::Keys)?);
            doors
                .tasks
                .push(spawn(l, FrontDoor::Himds(Arc::clone(&keys))));
            let sweeper = Arc::clone(&keys);
            doors.tasks.push(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(EXPIRY_SWEEP).await;
                    sweeper.expire(SystemTime::now());
                }
            }));
            doors.himds = Some((addr, keys));
        }
        if let Some(l) = app {
            let addr = l.local_addr().unwrap_or(az.app_service.listen);
            doors
                .tasks
                .push(spawn(l, FrontDoor::Plain(Door::AppService)));
            doors.app_service = Some((addr, app_service_header(az, keys)));
        }
        if let Some(l) = legacy {
            let addr = l.local_addr().unwrap_or(az.legacy_msi.listen);
            doors
                .tasks
                .push(spawn(l, FrontDoor::Plain(Door::LegacyMsi)));
            doors.legacy_msi = Some(addr);
        }
        Ok(doors)
    }

    /// Whether any kernel-socket door is open.
    pub fn is_empty(&self) -> bool {
        self.himds.is_none() && self.app_service.is_none() && self.legacy_msi.is_none()
    }

    /// Shell lines pointing SDKs at each open door (comments name the door). The App Service
    /// header is a secret: these lines go to standard output for the user, never to the log.
    pub fn env_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some((addr, keys)) = &self.himds {
            let base = base_url(*addr, 40342);
            lines.push(format!(
                "# Azure Arc (HIMDS); key files in {}",
                keys.directory().display()
            ));
            lines.push(format!(
                "export IDENTITY_ENDPOINT={base}/metadata/identity/oauth2/token"
            ));
            lines.push(format!("export IMDS_ENDPOINT={base}"));
        }
        if let Some((addr, header)) = &self.app_service {
            lines.push("# App Service identity endpoint".into());
            lines.push(format!(
                "export IDENTITY_ENDPOINT=http://{addr}{APP_SERVICE_PATH}"
            ));
            lines.push(format!("export IDENTITY_HEADER={header}"));
        }
        if let Some(addr) = self.legacy_msi {
            let base = base_url(addr, 50342);
            lines.push(format!(
                "# legacy VM extension: curl -H Metadata:true '{base}{LEGACY_MSI_PATH}?resource=...'"
            ));
        }
        if let Some(uri) = &self.ecs_relative_uri {
            lines.push(format!("# ECS container credentials at {ECS_ADDRESS}"));
            lines.push(format!(
                "export AWS_CONTAINER_CREDENTIALS_RELATIVE_URI={uri}"
            ));
        }
        lines
    }

    /// Stops the doors and undoes what they created.
    pub fn close(mut self) -> Vec<String> {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        match self.himds.take() {
            Some((_, keys)) => keys.close(),
            None => Vec::new(),
        }
    }
}

/// `http://localhost:PORT` for loopback on the door's usual port (the form real machines
/// export), else the address itself.
fn base_url(addr: SocketAddr, usual_port: u16) -> String {
    if addr.ip().is_loopback() && addr.port() == usual_port && addr.is_ipv4() {
        format!("http://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}
