//! The development issuer's Ed25519 key: a PKCS#8 PEM file created on first use (mode 0600,
//! parent directories made), shared by `serve` (which publishes its public key) and
//! `mint-token` (which signs with it). Its key id is derived from the public key, so both
//! always agree on it.

use std::{
    fmt,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use gateway_common::auth_config::Algorithm;
use jwt_simple::prelude::Ed25519KeyPair;
use sha2::{Digest, Sha256};

use super::key::{KeyMaterial, VerifyingKey};

/// A private key file larger than this is not a key.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DevKeyError {
    #[error("{path}: cannot read the development signing key: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: cannot create the development signing key: {reason}")]
    Create { path: String, reason: String },
    #[error("{path}: expected an Ed25519 private key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----)")]
    NotAKey { path: String },
}

/// The key pair. `Debug` shows the key id only.
pub struct DevKey {
    key_pair: Ed25519KeyPair,
    kid: String,
}

impl fmt::Debug for DevKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevKey")
            .field("kid", &self.kid)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl DevKey {
    /// Parses a PKCS#8 PEM private key.
    pub fn from_pem(pem: &str) -> Option<Self> {
        let key_pair = Ed25519KeyPair::from_pem(pem).ok()?;
        Some(Self::new(key_pair))
    }

    fn new(key_pair: Ed25519KeyPair) -> Self {
        let kid = key_id(&key_pair.public_key().to_bytes());
        let key_pair = key_pair.with_key_id(&kid);
        Self { key_pair, kid }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs with the key id set, for `mint-token`.
    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.key_pair
    }

    /// The public key, as the filter gets it.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            kid: self.kid.clone(),
            alg: Some(Algorithm::EdDSA),
            material: KeyMaterial::Ed25519 {
                x: self.key_pair.public_key().to_bytes(),
            },
        }
    }
}

/// First 16 hex digits of the SHA-256 of the raw public key.
pub fn key_id(public_key: &[u8]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

/// Reads the key at `path`, creating it first when there is none. Safe against another
/// process creating it at the same time: the file appears complete or not at all.
pub fn load_or_create(path: &Path) -> Result<DevKey, DevKeyError> {
    match read(path) {
        Ok(key) => return Ok(key),
        Err(ReadError::Missing) => {}
        Err(ReadError::Failed(error)) => return Err(error),
    }
    let created = DevKey::new(Ed25519KeyPair::generate());
    let pem = created.key_pair.to_pem();
    let create_error = |e: io::Error| DevKeyError::Create {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent).map_err(create_error)?;
    }
    let staging = staging_path(path);
    write_private(&staging, pem.as_bytes()).map_err(create_error)?;
    // A hard link fails when the key exists: then the other process's key wins.
    let linked = std::fs::hard_link(&staging, path);
    let _ = std::fs::remove_file(&staging);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), kid = created.kid(), "created the development signing key");
            Ok(created)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read(path) {
            Ok(key) => Ok(key),
            Err(ReadError::Missing) => Err(create_error(e)),
            Err(ReadError::Failed(error)) => Err(error),
        },
        Err(e) => Err(create_error(e)),
    }
}

enum ReadError {
    Missing,
    Failed(DevKeyError),
}

fn read(path: &Path) -> Result<DevKey, ReadError> {
    let display = || path.display().to_string();
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::Missing),
        Err(e) => {
            return Err(ReadError::Failed(DevKeyError::Read {
                path: display(),
                reason: e.to_string(),
            }));
        }
    };
    if !metadata.is_file() || metadata.len() > MAX_KEY_FILE_BYTES {
        return Err(ReadError::Failed(DevKeyError::NotAKey { path: display() }));
    }
    let pem = std::fs::read_to_string(path).map_err(|e| {
        ReadError::Failed(DevKeyError::Read {
            path: display(),
            reason: e.to_string(),
        })
    })?;
    warn_if_readable_by_others(path, &metadata);
    DevKey::from_pem(&pem).ok_or(ReadError::Failed(DevKeyError::NotAKey { path: display() }))
}

fn staging_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

#[cfg(unix)]
fn write_private(path: &Path, content: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(content)?;
    file.sync_all()
}

#[cfg(unix)]
fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

#[cfg(not(unix))]
fn create_private_dir(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path, metadata: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the development signing key is readable by other users");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path, _: &std::fs::Metadata) {}

#[cfg(test)]
mod tests {
    use jwt_simple::prelude::*;

    use super::*;

    #[test]
    fn creates_a_private_key_once_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/keys/dev-issuer.pem");
        let created = load_or_create(&path).unwrap();
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = load_or_create(&path).unwrap();
        assert_eq!(again.kid(), created.kid());
        assert_eq!(again.verifying_key(), created.verifying_key());
        // Nothing left over from staging.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["dev-issuer.pem"]);
    }

    #[test]
    fn key_id_is_the_start_of_the_public_key_hash() {
        let key = DevKey::new(Ed25519KeyPair::generate());
        let KeyMaterial::Ed25519 { x } = key.verifying_key().material else {
            panic!("not Ed25519");
        };
        assert_eq!(key.kid(), &hex::encode(Sha256::digest(&x))[..16]);
        assert_eq!(key.kid().len(), 16);
        // Tokens it signs carry the kid and verify with the published key.
        let token = key
            .key_pair()
            .sign(Claims::create(Duration::from_mins(5)))
            .unwrap();
        let public = Ed25519PublicKey::from_bytes(&x).unwrap();
        assert!(public.verify_token::<NoCustomClaims>(&token, None).is_ok());
        assert_eq!(
            Token::decode_metadata(&token).unwrap().key_id(),
            Some(key.kid())
        );
        assert!(!format!("{key:?}").contains("BEGIN"));
    }

    #[test]
    fn a_file_that_is_not_a_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.pem");
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert_eq!(
            load_or_create(&path).unwrap_err(),
            DevKeyError::NotAKey {
                path: path.display().to_string()
            }
        );
    }
}
