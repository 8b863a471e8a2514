//! What the API and control ports share: the configuration, the issued credentials and the
//! request log.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use crate::config::{ConfigError, EmulatorConfig};
use crate::credentials::{ContainerCredentials, CredentialStore};
use crate::records::RecordLog;

/// Everything the two ports share.
#[derive(Debug)]
pub struct State {
    pub config: EmulatorConfig,
    credentials: Mutex<CredentialStore>,
    records: Mutex<RecordLog>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data stays consistent even if a holder panicked: every update is a single call.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    pub fn new(config: EmulatorConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            credentials: Mutex::new(CredentialStore::new(config.static_credentials.clone())),
            records: Mutex::new(RecordLog::default()),
            config,
        })
    }

    pub fn credentials(&self) -> MutexGuard<'_, CredentialStore> {
        lock(&self.credentials)
    }

    pub fn records(&self) -> MutexGuard<'_, RecordLog> {
        lock(&self.records)
    }

    /// Issues new temporary credentials valid for the configured lifetime from `now`.
    pub fn issue_credentials(&self, now: SystemTime) -> ContainerCredentials {
        let mut random = [0u8; 128];
        getrandom::fill(&mut random).expect("the operating system provides random bytes");
        self.credentials()
            .issue(now, self.config.temp_credentials_ttl, &random)
    }
}
