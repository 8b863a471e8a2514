//! The verification keys of every issuer, built from the control service's `IdentityKeys`.
//! A key only verifies the algorithms its type allows, that its JWK `alg` names (if any) and
//! that its issuer accepts: an HS256 token can never be checked against an RSA key's bytes.

use gateway_common::auth_config::{Algorithm, JwtAuthentication};
use gateway_common::proto::{IdentityKeys, VerificationKey};
use jwt_simple::prelude::*;

/// Custom claims: everything that is not a registered claim, as JSON.
pub type Claims = JWTClaims<serde_json::Map<String, serde_json::Value>>;

/// A public key (or development secret) ready for one algorithm.
pub enum Verifier {
    Rs256(RS256PublicKey),
    Rs384(RS384PublicKey),
    Rs512(RS512PublicKey),
    Ps256(PS256PublicKey),
    Ps384(PS384PublicKey),
    Ps512(PS512PublicKey),
    Es256(ES256PublicKey),
    Es384(ES384PublicKey),
    EdDsa(Ed25519PublicKey),
    Hs256(HS256Key),
}

impl Verifier {
    pub fn verify(
        &self,
        token: &str,
        options: VerificationOptions,
    ) -> Result<Claims, jwt_simple::Error> {
        let options = Some(options);
        match self {
            Verifier::Rs256(k) => k.verify_token(token, options),
            Verifier::Rs384(k) => k.verify_token(token, options),
            Verifier::Rs512(k) => k.verify_token(token, options),
            Verifier::Ps256(k) => k.verify_token(token, options),
            Verifier::Ps384(k) => k.verify_token(token, options),
            Verifier::Ps512(k) => k.verify_token(token, options),
            Verifier::Es256(k) => k.verify_token(token, options),
            Verifier::Es384(k) => k.verify_token(token, options),
            Verifier::EdDsa(k) => k.verify_token(token, options),
            Verifier::Hs256(k) => k.verify_token(token, options),
        }
    }
}

struct LoadedKey {
    kid: String,
    verifiers: Vec<(Algorithm, Verifier)>,
    /// As the control service sent it: what a signature check sends back to it.
    key: VerificationKey,
}

impl LoadedKey {
    fn verifier_for(&self, algorithm: Algorithm) -> Option<(&Verifier, &VerificationKey)> {
        self.verifiers
            .iter()
            .find(|(alg, _)| *alg == algorithm)
            .map(|(_, v)| (v, &self.key))
    }
}

/// What looking a key up found.
pub enum Lookup<'k> {
    /// The verifier, and the key it was made of.
    Found(&'k Verifier, &'k VerificationKey),
    /// No key of the issuer has this id (or the token names none and no key fits).
    UnknownKey,
}

/// Keys per configured issuer (same order as the configuration).
#[derive(Default)]
pub struct KeyStore {
    pub version: u64,
    issuers: Vec<Vec<LoadedKey>>,
}

impl KeyStore {
    /// Builds the store; keys that cannot be used are skipped and described in the second
    /// value (for the log).
    pub fn build(config: &JwtAuthentication, message: &IdentityKeys) -> (Self, Vec<String>) {
        let mut skipped = Vec::new();
        let issuers = config
            .issuers
            .iter()
            .map(|issuer| {
                let keys = message
                    .issuers
                    .iter()
                    .filter(|i| i.issuer == issuer.issuer)
                    .flat_map(|i| &i.keys);
                keys.filter_map(|key| {
                    let verifiers: Vec<_> = issuer
                        .algorithms
                        .iter()
                        .filter(|alg| key.alg.is_empty() || key.alg == alg.name())
                        .filter_map(|alg| verifier(key, *alg).map(|v| (*alg, v)))
                        .collect();
                    if verifiers.is_empty() {
                        skipped.push(format!(
                            "issuer {}: key {:?} ({} {}) fits none of its algorithms",
                            issuer.name, key.kid, key.kty, key.crv
                        ));
                        return None;
                    }
                    Some(LoadedKey {
                        kid: key.kid.clone(),
                        verifiers,
                        key: key.clone(),
                    })
                })
                .collect()
            })
            .collect();
        (
            Self {
                version: message.version,
                issuers,
            },
            skipped,
        )
    }

    pub fn key_count(&self) -> usize {
        self.issuers.iter().map(Vec::len).sum()
    }

    /// The verifier for a token of `issuer` (index) signed with `algorithm` by key `kid`.
    /// Without a kid, the issuer's only key that fits the algorithm.
    pub fn find(&self, issuer: usize, kid: Option<&str>, algorithm: Algorithm) -> Lookup<'_> {
        let Some(keys) = self.issuers.get(issuer) else {
            return Lookup::UnknownKey;
        };
        let found = match kid {
            Some(kid) => keys
                .iter()
                .filter(|k| k.kid == kid)
                .find_map(|k| k.verifier_for(algorithm)),
            None => {
                let mut candidates = keys.iter().filter_map(|k| k.verifier_for(algorithm));
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        };
        found.map_or(Lookup::UnknownKey, |(verifier, key)| {
            Lookup::Found(verifier, key)
        })
    }
}

pub(super) fn verifier(key: &VerificationKey, alg: Algorithm) -> Option<Verifier> {
    use Algorithm::*;
    let verifier = match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
            if key.kty != "RSA" || key.n.is_empty() || key.e.is_empty() {
                return None;
            }
            let (n, e) = (key.n.as_slice(), key.e.as_slice());
            match alg {
                RS256 => Verifier::Rs256(RS256PublicKey::from_components(n, e).ok()?),
                RS384 => Verifier::Rs384(RS384PublicKey::from_components(n, e).ok()?),
                RS512 => Verifier::Rs512(RS512PublicKey::from_components(n, e).ok()?),
                PS256 => Verifier::Ps256(PS256PublicKey::from_components(n, e).ok()?),
                PS384 => Verifier::Ps384(PS384PublicKey::from_components(n, e).ok()?),
                _ => Verifier::Ps512(PS512PublicKey::from_components(n, e).ok()?),
            }
        }
        ES256 if key.kty == "EC" && key.crv == "P-256" => {
            Verifier::Es256(ES256PublicKey::from_bytes(&sec1(key)).ok()?)
        }
        ES384 if key.kty == "EC" && key.crv == "P-384" => {
            Verifier::Es384(ES384PublicKey::from_bytes(&sec1(key)).ok()?)
        }
        EdDSA if key.kty == "OKP" && key.crv == "Ed25519" => {
            Verifier::EdDsa(Ed25519PublicKey::from_bytes(&key.x).ok()?)
        }
        HS256 if key.kty == "oct" && key.k.len() >= 32 => {
            Verifier::Hs256(HS256Key::from_bytes(&key.k))
        }
        _ => return None,
    };
    Some(verifier)
}

/// Uncompressed SEC1 point from JWK coordinates.
fn sec1(key: &VerificationKey) -> Vec<u8> {
    let mut point = Vec::with_capacity(1 + key.x.len() + key.y.len());
    point.push(0x04);
    point.extend_from_slice(&key.x);
    point.extend_from_slice(&key.y);
    point
}
