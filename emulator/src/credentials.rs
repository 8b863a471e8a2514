//! Which access keys the API port accepts: the static ones from the command line and the
//! temporary ones the control port issues (in the ECS container-credentials format).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{Secret, StaticCredentials};

/// Issued credentials kept for lookup; older ones are forgotten first (and then rejected as
/// unknown rather than expired).
pub const MAX_ISSUED: usize = 10_000;

pub const ROLE_ARN: &str = "arn:aws:iam::000000000000:role/bedrock-emulator";

/// What the verifier needs to know about an access key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Valid {
        secret_access_key: Secret,
        /// The token the request must carry in `x-amz-security-token`, if any.
        session_token: Option<Secret>,
    },
    Expired,
    Unknown,
}

#[derive(Debug, Clone)]
struct Issued {
    secret_access_key: Secret,
    session_token: Secret,
    expires_at: SystemTime,
}

/// Temporary credentials in the shape aws-config's container (ECS) provider reads from
/// `AWS_CONTAINER_CREDENTIALS_FULL_URI`. Serializing it exposes the secret: that is what the
/// endpoint is for. `Debug` does not.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct ContainerCredentials {
    #[serde(rename = "AccessKeyId")]
    pub access_key_id: String,
    #[serde(rename = "SecretAccessKey", serialize_with = "expose")]
    pub secret_access_key: Secret,
    #[serde(rename = "Token", serialize_with = "expose")]
    pub token: Secret,
    /// RFC 3339, UTC, whole seconds: `2026-11-22T00:15:00Z`.
    #[serde(rename = "Expiration")]
    pub expiration: String,
    #[serde(rename = "RoleArn")]
    pub role_arn: String,
}

fn expose<S: serde::Serializer>(secret: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose())
}

impl fmt::Debug for ContainerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("token", &self.token)
            .field("expiration", &self.expiration)
            .finish()
    }
}

#[derive(Debug)]
pub struct CredentialStore {
    static_credentials: Option<StaticCredentials>,
    issued: HashMap<String, Issued>,
    /// Access key ids in issue order, to forget the oldest first.
    order: VecDeque<String>,
    issued_total: u64,
}

const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Maps random bytes onto an alphabet whose size divides 256, so every symbol is equally likely.
fn encode_random(random: &[u8], alphabet: &[u8]) -> String {
    debug_assert!(256 % alphabet.len() == 0);
    random
        .iter()
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect()
}

impl CredentialStore {
    pub fn new(static_credentials: Option<StaticCredentials>) -> Self {
        Self {
            static_credentials,
            issued: HashMap::new(),
            order: VecDeque::new(),
            issued_total: 0,
        }
    }

    pub fn lookup(&self, access_key_id: &str, now: SystemTime) -> Lookup {
        if let Some(creds) = &self.static_credentials
            && creds.access_key_id == access_key_id
        {
            return Lookup::Valid {
                secret_access_key: creds.secret_access_key.clone(),
                session_token: creds.session_token.clone(),
            };
        }
        match self.issued.get(access_key_id) {
            Some(issued) if now >= issued.expires_at => Lookup::Expired,
            Some(issued) => Lookup::Valid {
                secret_access_key: issued.secret_access_key.clone(),
                session_token: Some(issued.session_token.clone()),
            },
            None => Lookup::Unknown,
        }
    }

    /// Issues new credentials valid for `ttl` from `now`. `random` must be 128 bytes from a
    /// cryptographically secure source: 16 for the key id, 40 for the secret, 72 for the token.
    pub fn issue(
        &mut self,
        now: SystemTime,
        ttl: Duration,
        random: &[u8; 128],
    ) -> ContainerCredentials {
        // Whole seconds, so the advertised expiration and the enforced one agree; rounded up, so
        // the credentials stay valid for at least `ttl`.
        let expires_at = round_up_to_second(now + ttl);
        let access_key_id = format!("ASIA{}", encode_random(&random[..16], UPPER_ALNUM));
        let secret_access_key = Secret::new(encode_random(&random[16..56], SECRET_ALPHABET));
        let token = Secret::new(format!(
            "EMU{}",
            encode_random(&random[56..], SECRET_ALPHABET)
        ));
        self.issued.insert(
            access_key_id.clone(),
            Issued {
                secret_access_key: secret_access_key.clone(),
                session_token: token.clone(),
                expires_at,
            },
        );
        self.order.push_back(access_key_id.clone());
        while self.order.len() > MAX_ISSUED {
            if let Some(oldest) = self.order.pop_front() {
                self.issued.remove(&oldest);
            }
        }
        self.issued_total += 1;
        ContainerCredentials {
            access_key_id,
            secret_access_key,
            token,
            expiration: format_rfc3339(expires_at),
            role_arn: ROLE_ARN.to_string(),
        }
    }

    /// How many credentials were issued since start.
    pub fn issued_total(&self) -> u64 {
        self.issued_total
    }
}

fn round_up_to_second(at: SystemTime) -> SystemTime {
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let whole = since_epoch.as_secs() + u64::from(since_epoch.subsec_nanos() > 0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(whole)
}

const RFC3339_SECONDS: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// `2026-11-22T00:15:00Z`.
pub fn format_rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(RFC3339_SECONDS)
        .expect("a SystemTime formats as RFC 3339")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn random(seed: u8) -> [u8; 128] {
        std::array::from_fn(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
    }

    #[test]
    fn issued_credentials_are_valid_until_they_expire() {
        let mut store = CredentialStore::new(None);
        let now = at(1_795_305_600); // 2026-11-22T00:00:00Z
        let creds = store.issue(now, Duration::from_secs(900), &random(1));
        assert_eq!(creds.expiration, "2026-11-22T00:15:00Z");
        assert!(creds.access_key_id.starts_with("ASIA"));
        assert_eq!(creds.access_key_id.len(), 20);
        assert_eq!(creds.secret_access_key.expose().len(), 40);
        assert_eq!(creds.role_arn, ROLE_ARN);
        let valid = Lookup::Valid {
            secret_access_key: creds.secret_access_key.clone(),
            session_token: Some(creds.token.clone()),
        };
        assert_eq!(store.lookup(&creds.access_key_id, now), valid);
        assert_eq!(store.lookup(&creds.access_key_id, at(1_795_306_499)), valid);
        assert_eq!(
            store.lookup(&creds.access_key_id, at(1_795_306_500)),
            Lookup::Expired
        );
        assert_eq!(store.lookup("ASIAUNKNOWN", now), Lookup::Unknown);
        assert_eq!(store.issued_total(), 1);
    }

    #[test]
    fn expiration_rounds_up_to_whole_seconds() {
        let mut store = CredentialStore::new(None);
        let now = at(1_795_305_600) + Duration::from_millis(999);
        let creds = store.issue(now, Duration::from_secs(1), &random(4));
        assert_eq!(creds.expiration, "2026-11-22T00:00:02Z");
        let valid = store.lookup(
            &creds.access_key_id,
            at(1_795_305_601) + Duration::from_millis(999),
        );
        assert!(matches!(valid, Lookup::Valid { .. }), "{valid:?}");
        assert_eq!(
            store.lookup(&creds.access_key_id, at(1_795_305_602)),
            Lookup::Expired
        );
    }

    #[test]
    fn each_issue_is_distinct() {
        let mut store = CredentialStore::new(None);
        let a = store.issue(at(0), Duration::from_secs(1), &random(1));
        let b = store.issue(at(0), Duration::from_secs(1), &random(2));
        assert_ne!(a.access_key_id, b.access_key_id);
        assert_ne!(a.secret_access_key, b.secret_access_key);
        assert_ne!(a.token, b.token);
    }

    #[test]
    fn static_credentials_never_expire() {
        let store = CredentialStore::new(Some(StaticCredentials {
            access_key_id: "AKIDSTATIC".into(),
            secret_access_key: Secret::new("s3cret"),
            session_token: Some(Secret::new("tok")),
        }));
        assert_eq!(
            store.lookup("AKIDSTATIC", at(u32::MAX.into())),
            Lookup::Valid {
                secret_access_key: Secret::new("s3cret"),
                session_token: Some(Secret::new("tok")),
            }
        );
        assert_eq!(store.lookup("AKIDOTHER", at(0)), Lookup::Unknown);
    }

    #[test]
    fn oldest_issued_credentials_are_forgotten_first() {
        let mut store = CredentialStore::new(None);
        let first = store.issue(at(0), Duration::from_secs(60), &random(0));
        for i in 0..MAX_ISSUED {
            let mut bytes = random(1);
            // The key id keeps 5 bits of each of its bytes: spread `i` over three of them.
            for (k, byte) in bytes[..3].iter_mut().enumerate() {
                *byte = ((i >> (5 * k)) & 31) as u8;
            }
            store.issue(at(0), Duration::from_secs(60), &bytes);
        }
        assert_eq!(store.lookup(&first.access_key_id, at(1)), Lookup::Unknown);
        assert_eq!(store.issued.len(), MAX_ISSUED);
        assert_eq!(store.issued_total(), MAX_ISSUED as u64 + 1);
    }

    #[test]
    fn json_exposes_the_secret_and_debug_does_not() {
        let mut store = CredentialStore::new(None);
        let creds = store.issue(at(0), Duration::from_secs(60), &random(3));
        let json: serde_json::Value = serde_json::to_value(&creds).unwrap();
        assert_eq!(json["SecretAccessKey"], creds.secret_access_key.expose());
        assert_eq!(json["Token"], creds.token.expose());
        assert_eq!(json["Expiration"], "1970-01-01T00:01:00Z");
        let shown = format!("{creds:?}");
        assert!(!shown.contains(creds.secret_access_key.expose()), "{shown}");
        assert!(!shown.contains(creds.token.expose()), "{shown}");
    }
}
