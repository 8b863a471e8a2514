//! A checked verification key, as the filter receives it ([`VerifyingKey`]), and its wire form.

use gateway_common::{auth_config::Algorithm, proto};

use crate::util::Secret;

/// One key that verifies an issuer's tokens: supported type and curve, sizes checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    /// JWK `kid`; empty when the JWK has none.
    pub kid: String,
    /// Set when the JWK names its algorithm: the key then verifies only that one.
    pub alg: Option<Algorithm>,
    pub material: KeyMaterial,
}

/// The public (or, for `oct`, shared) key material. `Debug` never shows a shared secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// Big-endian modulus and exponent, without leading zero bytes.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Affine coordinates, each exactly the curve's field size.
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    /// The 32-byte public key.
    Ed25519 { x: Vec<u8> },
    /// An HS256 development secret.
    Oct { k: Secret },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    /// The JWK `crv` name.
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }

    /// Bytes of one coordinate.
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    /// The one JWS algorithm that uses the curve.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Curve::P256 => Algorithm::ES256,
            Curve::P384 => Algorithm::ES384,
        }
    }
}

impl KeyMaterial {
    /// The JWK `kty`.
    pub fn kty(&self) -> &'static str {
        match self {
            KeyMaterial::Rsa { .. } => "RSA",
            KeyMaterial::Ec { .. } => "EC",
            KeyMaterial::Ed25519 { .. } => "OKP",
            KeyMaterial::Oct { .. } => "oct",
        }
    }

    /// Whether this key can verify `alg` at all.
    pub fn fits(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyMaterial::Rsa { .. } => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyMaterial::Ec { curve, .. } => curve.algorithm() == alg,
            KeyMaterial::Ed25519 { .. } => alg == EdDSA,
            KeyMaterial::Oct { .. } => alg == HS256,
        }
    }
}

impl VerifyingKey {
    /// The `oct` key of an HS256 development issuer (no key id: it is the issuer's only key).
    pub fn shared_secret(secret: &Secret) -> Self {
        Self {
            kid: String::new(),
            alg: Some(Algorithm::HS256),
            material: KeyMaterial::Oct { k: secret.clone() },
        }
    }
}

impl From<&VerifyingKey> for proto::VerificationKey {
    fn from(key: &VerifyingKey) -> Self {
        let mut out = proto::VerificationKey {
            kid: key.kid.clone(),
            kty: key.material.kty().to_string(),
            alg: key.alg.map(|a| a.name().to_string()).unwrap_or_default(),
            ..Default::default()
        };
        match &key.material {
            KeyMaterial::Rsa { n, e } => {
                out.n = n.clone();
                out.e = e.clone();
            }
            KeyMaterial::Ec { curve, x, y } => {
                out.crv = curve.name().to_string();
                out.x = x.clone();
                out.y = y.clone();
            }
            KeyMaterial::Ed25519 { x } => {
                out.crv = "Ed25519".to_string();
                out.x = x.clone();
            }
            // The one place a shared secret leaves the process: to the filter.
            KeyMaterial::Oct { k } => out.k = k.expose().as_bytes().to_vec(),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_of_each_kind() {
        let ec = VerifyingKey {
            kid: "e1".into(),
            alg: None,
            material: KeyMaterial::Ec {
                curve: Curve::P384,
                x: vec![1; 48],
                y: vec![2; 48],
            },
        };
        let wire = proto::VerificationKey::from(&ec);
        assert_eq!(
            (wire.kid.as_str(), wire.kty.as_str(), wire.crv.as_str()),
            ("e1", "EC", "P-384")
        );
        assert_eq!(
            (wire.x.len(), wire.y.len(), wire.alg.as_str()),
            (48, 48, "")
        );

        let okp = VerifyingKey {
            kid: String::new(),
            alg: Some(Algorithm::EdDSA),
            material: KeyMaterial::Ed25519 { x: vec![7; 32] },
        };
        let wire = proto::VerificationKey::from(&okp);
        assert_eq!(
            (wire.kty.as_str(), wire.crv.as_str(), wire.alg.as_str()),
            ("OKP", "Ed25519", "EdDSA")
        );

        let rsa = VerifyingKey {
            kid: "r".into(),
            alg: Some(Algorithm::PS256),
            material: KeyMaterial::Rsa {
                n: vec![0xc1; 256],
                e: vec![1, 0, 1],
            },
        };
        let wire = proto::VerificationKey::from(&rsa);
        assert_eq!((wire.n.len(), wire.e.as_slice()), (256, &[1u8, 0, 1][..]));
        assert!(wire.x.is_empty() && wire.k.is_empty());

        let oct = VerifyingKey {
            kid: String::new(),
            alg: Some(Algorithm::HS256),
            material: KeyMaterial::Oct {
                k: Secret::new("a-development-secret-of-32-bytes!"),
            },
        };
        assert_eq!(
            proto::VerificationKey::from(&oct).k,
            b"a-development-secret-of-32-bytes!"
        );
        assert!(!format!("{oct:?}").contains("development-secret"));
    }

    #[test]
    fn algorithms_fit_their_key_types() {
        let rsa = KeyMaterial::Rsa {
            n: vec![],
            e: vec![],
        };
        assert!(rsa.fits(Algorithm::PS512) && !rsa.fits(Algorithm::ES256));
        let p256 = KeyMaterial::Ec {
            curve: Curve::P256,
            x: vec![],
            y: vec![],
        };
        assert!(p256.fits(Algorithm::ES256) && !p256.fits(Algorithm::ES384));
        assert!(KeyMaterial::Ed25519 { x: vec![] }.fits(Algorithm::EdDSA));
        let oct = KeyMaterial::Oct { k: Secret::new("") };
        assert!(oct.fits(Algorithm::HS256) && !oct.fits(Algorithm::EdDSA));
    }
}
