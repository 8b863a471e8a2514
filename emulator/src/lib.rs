//! A Bedrock emulator for development and end-to-end tests: a real HTTP server with Bedrock's
//! REST shapes (bedrock-runtime and bedrock-agent-runtime), event-stream framing with CRCs,
//! usage fields, deterministic replies steerable per request, and an independent SigV4
//! verification of every request. A control port exposes what it received and issues
//! temporary credentials.
//!
//! Tests run it in-process with [`Emulator::start`] (or [`serve`] on their own listeners);
//! the `bedrock-emulator` binary wraps the same library.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod control;
pub mod credentials;
pub mod eventstream;
pub mod operations;
pub mod prompt_cache;
pub mod records;
pub mod server;
pub mod sigv4;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{ConfigError, EmulatorConfig, Secret, StaticCredentials};
pub use credentials::ContainerCredentials;
pub use records::{RequestRecord, Usage};
pub use server::{ServeError, serve};
pub use state::State;

/// A running emulator on its own task; dropping it shuts it down.
#[derive(Debug)]
pub struct Emulator {
    api_addr: SocketAddr,
    control_addr: Option<SocketAddr>,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Io {
            context: format!("binding the {what} port to {addr}"),
            source,
        })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, ServeError> {
    listener.local_addr().map_err(|source| ServeError::Io {
        context: "reading a bound address".into(),
        source,
    })
}

impl Emulator {
    /// Binds the API port (and the control port when given; port 0 picks a free one) and
    /// starts serving on a new task.
    pub async fn start(
        config: EmulatorConfig,
        api_addr: SocketAddr,
        control_addr: Option<SocketAddr>,
    ) -> Result<Self, ServeError> {
        let state = Arc::new(State::new(config)?);
        let api = bind(api_addr, "API").await?;
        let control = match control_addr {
            Some(addr) => Some(bind(addr, "control").await?),
            None => None,
        };
        let api_addr = local_addr(&api)?;
        let control_addr = control.as_ref().map(local_addr).transpose()?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve_state(state.clone(), api, control, async {
            let _ = stop.await;
        }));
        Ok(Self {
            api_addr,
            control_addr,
            state,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// `http://127.0.0.1:PORT`, for an SDK's `endpoint_url`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    pub fn control_url(&self) -> Option<String> {
        self.control_addr.map(|addr| format!("http://{addr}"))
    }

    /// The requests the API port received (the last 1000, oldest first).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.records().snapshot()
    }

    pub fn clear_requests(&self) {
        self.state.records().clear();
    }

    /// Forgets every cached prompt prefix, as `DELETE /cache` on the control port does;
    /// answers how many there were.
    pub fn clear_prompt_cache(&self) -> usize {
        self.state.prompt_cache().clear()
    }

    /// Issues temporary credentials, as `GET /credentials` on the control port does.
    pub fn issue_credentials(&self) -> ContainerCredentials {
        self.state.issue_credentials(std::time::SystemTime::now())
    }

    /// Stops accepting, lets open connections finish (briefly) and waits for the server task.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|err| ServeError::Io {
                context: "waiting for the server task".into(),
                source: std::io::Error::other(err),
            })?,
            None => Ok(()),
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
