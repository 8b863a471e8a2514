//! What the API and control ports share: the configuration, the issued credentials, the
//! request log and the prompt cache.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use crate::config::{ConfigError, EmulatorConfig};
use crate::credentials::{ContainerCredentials, CredentialStore};
use crate::prompt_cache::PromptCache;
use crate::records::RecordLog;

/// Everything the two ports share.
#[derive(Debug)]
pub struct State {
    pub config: EmulatorConfig,
    credentials: Mutex<CredentialStore>,
    records: Mutex<RecordLog>,
    prompt_cache: PromptCache,
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
            prompt_cache: PromptCache::default(),
            config,
        })
    }

    pub fn credentials(&self) -> MutexGuard<'_, CredentialStore> {
        lock(&self.credentials)
    }

    pub fn records(&self) -> MutexGuard<'_, RecordLog> {
        lock(&self.records)
    }

    /// The prompt prefixes each model has seen (kept when the request log is cleared).
    pub fn prompt_cache(&self) -> &PromptCache {
        &self.prompt_cache
    }

    /// Issues new temporary credentials valid for the configured lifetime from `now`.
    pub fn issue_credentials(&self, now: SystemTime) -> ContainerCredentials {
        let mut random = [0u8; 128];
        getrandom::fill(&mut random).expect("the operating system provides random bytes");
        self.credentials()
            .issue(now, self.config.temp_credentials_ttl, &random)
    }
}
