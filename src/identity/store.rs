//! The key store: the CA and the signing key in a state directory, created on first use and
//! reused on every later start.
//!
//! Layout of the directory (default [`DEFAULT_KEY_DIR`], mode 0700):
//!
//! ```text
//! ca-key.pem        the CA's RSA-2048 private key, PKCS#8 PEM, 0600
//! ca.pem            the CA certificate (self-signed, 10 years), PEM, 0600
//! signing-key.pem   the signing key, PKCS#8 PEM, 0600 (unless a key file is configured)
//! .lock             flock(2) held while files are created, so concurrent starts agree
//! ```
//!
//! Contract: [`open`] returns keys whose files exist, are complete and are readable by their
//! owner only. New files are written to a temporary name (0600 from creation, never wider) and
//! renamed into place, so a crash leaves either no file or a whole one. An existing directory
//! or key file that others may read is refused with the `chmod` that fixes it, never loosened
//! or silently used. A configured signing key (`$.identity.signingKeyFile`) replaces
//! `signing-key.pem`; PKCS#8 and PKCS#1 PEM are accepted. Key generation (a few hundred
//! milliseconds) happens here, at startup, never on the request path.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::RsaPrivateKey;
use x509_cert::der::{DecodePem, EncodePem};
use x509_cert::Certificate;

use super::cert;
use super::keys::{IdentityKeys, KeyError};

/// Where keys live unless configured otherwise.
pub const DEFAULT_KEY_DIR: &str = "/var/lib/imds-tun";

const CA_KEY_FILE: &str = "ca-key.pem";
const CA_CERT_FILE: &str = "ca.pem";
const SIGNING_KEY_FILE: &str = "signing-key.pem";
const LOCK_FILE: &str = ".lock";

/// How long a new CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// A new CA is valid from a day before its creation, for clocks a little behind.
const CA_BACKDATE: Duration = Duration::from_secs(86_400);

/// Opens (creating what is missing) the key store in `dir`; `signing_key_file`, when given,
/// is used instead of the store's signing key.
pub fn open(dir: &Path, signing_key_file: Option<&Path>) -> Result<IdentityKeys, KeyError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    check_private(dir, 0o700)?;
    let _lock = lock(&dir.join(LOCK_FILE))?;

    let ca_key = load_or_create_key(&dir.join(CA_KEY_FILE))?;
    let ca_path = dir.join(CA_CERT_FILE);
    let ca_cert = if ca_path.exists() {
        check_private(&ca_path, 0o600)?;
        let pem = fs::read_to_string(&ca_path).map_err(io(&ca_path))?;
        Certificate::from_pem(pem.as_bytes()).map_err(|e| KeyError::BadCertificate {
            path: ca_path.display().to_string(),
            reason: e.to_string(),
        })?
    } else {
        let now = SystemTime::now();
        let serial: [u8; 16] = random_bytes()?;
        let ca = cert::ca(
            &ca_key,
            &cert::serial_from(&serial),
            now - CA_BACKDATE,
            now + CA_LIFETIME,
        )?;
        let pem = ca
            .to_pem(LineEnding::LF)
            .map_err(|e| KeyError::Signing(e.to_string()))?;
        write_private(&ca_path, pem.as_bytes())?;
        ca
    };
    let signing = match signing_key_file {
        Some(path) => read_key(path)?,
        None => load_or_create_key(&dir.join(SIGNING_KEY_FILE))?,
    };
    IdentityKeys::new(&ca_key, ca_cert, signing).map_err(|e| match e {
        KeyError::BadCertificate { reason, .. } => KeyError::BadCertificate {
            path: ca_path.display().to_string(),
            reason,
        },
        other => other,
    })
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Refuses a file or directory that anyone but its owner may read or change.
fn check_private(path: &Path, expected: u32) -> Result<(), KeyError> {
    let mode = fs::metadata(path).map_err(io(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.display().to_string(),
            mode,
            expected,
        });
    }
    Ok(())
}

fn lock(path: &Path) -> Result<nix::fcntl::Flock<File>, KeyError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, errno)| {
        KeyError::Io {
            path: path.display().to_string(),
            source: errno.into(),
        }
    })
}

fn load_or_create_key(path: &Path) -> Result<RsaPrivateKey, KeyError> {
    if path.exists() {
        return read_key(path);
    }
    let key =
        RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(|e| KeyError::BadKey {
            path: path.display().to_string(),
            reason: format!("cannot generate: {e}"),
        })?;
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Signing(e.to_string()))?;
    write_private(path, pem.as_bytes())?;
    Ok(key)
}

/// Reads a private RSA key (PKCS#8 or PKCS#1 PEM) that only its owner can read.
fn read_key(path: &Path) -> Result<RsaPrivateKey, KeyError> {
    check_private(path, 0o600)?;
    let pem = zeroize::Zeroizing::new(fs::read_to_string(path).map_err(io(path))?);
    RsaPrivateKey::from_pkcs8_pem(&pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
        .map_err(|e| KeyError::BadKey {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// Writes `bytes` to `path` through a temporary file created 0600, then renames it into place.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let tmp = temporary_name(path);
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

fn temporary_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut out = [0u8; N];
    rsa::rand_core::RngCore::try_fill_bytes(&mut rsa::rand_core::OsRng, &mut out)
        .map_err(|e| KeyError::Signing(format!("no randomness: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "imds-tun-store-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn keys_are_created_private_and_reused() {
        let root = temp_dir("create");
        let dir = root.join("nested/keys");
        let first = open(&dir, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(&dir), 0o700);
        for f in [CA_KEY_FILE, CA_CERT_FILE, SIGNING_KEY_FILE, LOCK_FILE] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        let ca_before = fs::read(dir.join(CA_CERT_FILE)).unwrap_or_default();
        let second = open(&dir, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.kid(), second.kid(), "the signing key is reused");
        assert_eq!(first.ca_pem(), second.ca_pem(), "the CA is reused");
        assert_eq!(
            fs::read(dir.join(CA_CERT_FILE)).unwrap_or_default(),
            ca_before
        );
        assert!(!dir.join(".ca.pem.tmp").exists());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn loose_permissions_are_refused() {
        let dir = temp_dir("loose");
        open(&dir, None).unwrap_or_else(|e| panic!("{e}"));
        fs::set_permissions(
            dir.join(SIGNING_KEY_FILE),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let e = open(&dir, None).err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("mode 644") && e.contains("chmod 600")),
            "{e:?}"
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        let e = open(&dir, None).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("chmod 700")),
            "{e:?}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_configured_key_replaces_the_stored_one() {
        let dir = temp_dir("configured");
        let stored = open(&dir, None).unwrap_or_else(|e| panic!("{e}"));
        // The CA key as a signing key, in PKCS#1 form: a different key, another format.
        let ca_key = read_key(&dir.join(CA_KEY_FILE)).unwrap_or_else(|e| panic!("{e}"));
        let pem = rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_pem(&ca_key, LineEnding::LF)
            .unwrap_or_else(|e| panic!("{e}"));
        let file = dir.join("mine.pem");
        write_private(&file, pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let configured = open(&dir, Some(&file)).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(stored.kid(), configured.kid());
        assert_eq!(stored.ca_pem(), configured.ca_pem());
        fs::write(&file, "not a key").unwrap_or_else(|e| panic!("{e}"));
        let e = open(&dir, Some(&file)).err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("not a usable RSA private key")),
            "{e:?}"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
