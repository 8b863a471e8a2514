//! Signature checks for the filter (`GatewayControl/CheckSignatures`): whether a token's
//! signature is the given key's, with aws-lc-rs (native code) instead of the filter's Wasm.
//! The filter chooses the key and checks everything else about the token itself; this
//! answers only for the signature, so nothing here depends on the configuration.
//!
//! A check is CPU work (tens of microseconds), so at most half of the cores check at a time
//! ([`SignatureChecker::new`]): quota decisions, credentials and ADS keep the others whatever
//! arrives. Checks beyond that wait, up to [`MAX_WAITING`] of them; more are answered `BUSY`
//! (the filter then refuses its request with 429, which SDKs retry): a flood of fresh or
//! forged tokens queues here for a moment at most, and cannot grow without bound.
//!
//! Parsed keys are kept (a JWKS has a few keys, each parsed once), up to [`MAX_KEYS`].

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::SystemTime,
};

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use gateway_common::proto::{
    SignatureCheck, SignatureVerdict, VerificationKey, signature_verdict::Verdict,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use tracing::debug;

use crate::util::metrics::{Collect, MetricWriter};

/// Checks waiting for a core beyond the ones being checked; more are answered `BUSY`.
pub const MAX_WAITING: usize = 1024;
/// Parsed keys kept; when full, the cache starts again (keys change rarely).
const MAX_KEYS: usize = 256;
/// Verdicts a stream buffers for a slow reader.
const VERDICTS_BUFFERED: usize = 256;

pub struct SignatureChecker {
    cores: Semaphore,
    waiting: AtomicUsize,
    keys: Mutex<HashMap<KeyId, Arc<ParsedPublicKey>>>,
    counts: [AtomicU64; 4],
    streams: AtomicU64,
}

/// A key as the check names it: the algorithm and the key's material.
#[derive(Hash, PartialEq, Eq)]
struct KeyId {
    algorithm: String,
    material: Vec<u8>,
}

impl Default for SignatureChecker {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new((cores / 2).max(1))
    }
}

impl SignatureChecker {
    /// At most `cores` checks at a time.
    pub fn new(cores: usize) -> Self {
        Self {
            cores: Semaphore::new(cores.max(1)),
            waiting: AtomicUsize::new(0),
            keys: Mutex::new(HashMap::new()),
            counts: Default::default(),
            streams: AtomicU64::new(0),
        }
    }

    /// The verdict on `check`, once a core is free for it (`BUSY` when too many wait).
    pub async fn verdict(&self, check: &SignatureCheck) -> Verdict {
        let verdict = match self.cores.try_acquire() {
            Ok(_permit) => self.check(check),
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    Verdict::Busy
                } else {
                    let permit = self.cores.acquire().await;
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    match permit {
                        Ok(_permit) => self.check(check),
                        Err(_) => Verdict::Busy,
                    }
                }
            }
        };
        self.count(verdict);
        verdict
    }

    /// The verdict now, on this thread.
    pub fn check(&self, check: &SignatureCheck) -> Verdict {
        let Some(key) = check.key.as_ref() else {
            return Verdict::Unsupported;
        };
        let Some(parsed) = self.parsed(&check.algorithm, key) else {
            return Verdict::Unsupported;
        };
        match parsed.verify_sig(&check.signing_input, &check.signature) {
            Ok(()) => Verdict::Valid,
            Err(_) => Verdict::Invalid,
        }
    }

    fn parsed(&self, algorithm: &str, key: &VerificationKey) -> Option<Arc<ParsedPublicKey>> {
        let material = material(algorithm, key)?;
        let id = KeyId {
            algorithm: algorithm.to_string(),
            material,
        };
        if let Some(parsed) = self.keys.lock().ok()?.get(&id) {
            return Some(Arc::clone(parsed));
        }
        let parsed = Arc::new(parse(algorithm, key)?);
        let mut keys = self.keys.lock().ok()?;
        if keys.len() >= MAX_KEYS {
            keys.clear();
        }
        keys.insert(id, Arc::clone(&parsed));
        Some(parsed)
    }

    fn count(&self, verdict: Verdict) {
        let i = match verdict {
            Verdict::Valid => 0,
            Verdict::Invalid => 1,
            Verdict::Unsupported | Verdict::Unspecified => 2,
            Verdict::Busy => 3,
        };
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Checks answered, by verdict: valid, invalid, unsupported, busy.
    pub fn counts(&self) -> [u64; 4] {
        self.counts.each_ref().map(|c| c.load(Ordering::Relaxed))
    }
}

/// What identifies the key for `algorithm`, `None` when the key does not fit it.
fn material(algorithm: &str, key: &VerificationKey) -> Option<Vec<u8>> {
    let fits = match algorithm {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => key.kty == "RSA",
        "ES256" => key.kty == "EC" && key.crv == "P-256",
        "ES384" => key.kty == "EC" && key.crv == "P-384",
        "EdDSA" => key.kty == "OKP" && key.crv == "Ed25519",
        _ => false,
    };
    if !fits {
        return None;
    }
    let mut material =
        Vec::with_capacity(key.n.len() + key.e.len() + key.x.len() + key.y.len() + 8);
    for part in [&key.n, &key.e, &key.x, &key.y] {
        material.extend_from_slice(&(part.len() as u32).to_be_bytes());
        material.extend_from_slice(part);
    }
    Some(material)
}

fn parse(algorithm: &str, key: &VerificationKey) -> Option<ParsedPublicKey> {
    let rsa = |params: &'static RsaParameters| {
        let n = strip_leading_zeros(&key.n);
        let e = strip_leading_zeros(&key.e);
        RsaPublicKeyComponents { n, e }
            .to_parsed_public_key(params)
            .ok()
    };
    let ec = |params: &'static signature::EcdsaVerificationAlgorithm, size: usize| {
        if key.x.len() != size || key.y.len() != size {
            return None;
        }
        let mut point = Vec::with_capacity(1 + 2 * size);
        point.push(0x04);
        point.extend_from_slice(&key.x);
        point.extend_from_slice(&key.y);
        ParsedPublicKey::new(params, point).ok()
    };
    match algorithm {
        "RS256" => rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
        "PS256" => rsa(&signature::RSA_PSS_2048_8192_SHA256),
        "PS384" => rsa(&signature::RSA_PSS_2048_8192_SHA384),
        "PS512" => rsa(&signature::RSA_PSS_2048_8192_SHA512),
        "ES256" => ec(&signature::ECDSA_P256_SHA256_FIXED, 32),
        "ES384" => ec(&signature::ECDSA_P384_SHA384_FIXED, 48),
        "EdDSA" if key.x.len() == 32 => ParsedPublicKey::new(&signature::ED25519, &key.x).ok(),
        _ => None,
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Serves one `CheckSignatures` stream: each check answered as its turn comes, in order.
pub fn check_signatures(
    checker: Arc<SignatureChecker>,
    mut inbound: Streaming<SignatureCheck>,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<SignatureVerdict, Status>> {
    let (verdicts, receiver) = mpsc::channel(VERDICTS_BUFFERED);
    checker.streams.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                message = inbound.message() => message,
            };
            let check = match message {
                Ok(Some(check)) => check,
                Ok(None) => return,
                Err(status) => {
                    debug!(%status, "signature check stream ended by the caller");
                    return;
                }
            };
            let verdict = checker.verdict(&check).await;
            let answer = SignatureVerdict {
                id: check.id,
                verdict: verdict as i32,
            };
            if verdicts.send(Ok(answer)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(receiver)
}

impl Collect for SignatureChecker {
    fn collect(&self, metrics: &mut MetricWriter<'_>, _now: SystemTime) -> fmt::Result {
        let [valid, invalid, unsupported, busy] = self.counts();
        metrics.counters(
            "signature_checks",
            "Token signatures checked for the filter, by verdict (busy: refused because too many checks waited).",
            "verdict",
            [
                ("valid", valid),
                ("invalid", invalid),
                ("unsupported", unsupported),
                ("busy", busy),
            ],
        )?;
        metrics.counter(
            "signature_check_streams",
            "Signature check streams opened (about one per Envoy worker).",
            self.streams.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests;
