//! Signature checks made by the control service: the filter still reads the token, chooses
//! the key and checks everything else itself, with jwt-simple, in the same order as when it
//! verifies a token alone (header, then signature, then claims); only the signature is checked
//! by xds-server's native crypto, which is what costs (an RSA verification in Wasm is many
//! times the native one).
//!
//! jwt-simple checks a token's header and claims only together with its signature. A
//! [`Checked`] key is a MAC-like key (jwt-simple's public [`MACLike`] trait) whose tag for
//! the token's signing input is the token's own signature: verifying the token with it runs
//! every one of jwt-simple's checks on the header and claims and "verifies" exactly that pair
//! of signing input and signature, which the control service then checks for real. The
//! identity such a check yields is used only once the service says the signature is valid.

use gateway_common::auth_config::Algorithm;
use gateway_common::proto::{SignatureCheck, VerificationKey};
use jwt_simple::algorithms::{HMACKey, MACLike};
use jwt_simple::common::{KeyMetadata, VerificationOptions};
use jwt_simple::{Error, JWTError};

use super::cache::TokenKey;
use super::claims::Identity;
use super::error::AuthError;
use super::keys::Claims;

/// A token waiting for the control service's verdict on its signature.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingCheck {
    /// What to send (its id is the host's).
    pub check: SignatureCheck,
    /// The token, to verify it here if the service cannot.
    pub token: String,
    pub cache_key: TokenKey,
    /// The keys' version the key was chosen from.
    pub keys_version: Option<u64>,
    /// What the token proves if its signature is valid: the identity and until when it is
    /// accepted, or why it is refused all the same (its claims).
    pub if_valid: Result<(Identity, u64), AuthError>,
}

/// What became of a signature check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid,
    /// The service cannot check this key or algorithm.
    Unsupported,
    /// The service has too many checks waiting.
    Busy,
    /// No verdict: the stream failed or the check timed out.
    Failed,
}

/// The check to send for a token signed with `algorithm` by `key`.
pub fn signature_check(
    algorithm: Algorithm,
    key: &VerificationKey,
    signing_input: &str,
    signature: Vec<u8>,
) -> SignatureCheck {
    SignatureCheck {
        id: 0,
        algorithm: algorithm.name().to_string(),
        key: Some(key.clone()),
        signing_input: signing_input.as_bytes().to_vec(),
        signature,
    }
}

/// What jwt-simple makes of a token before and after its signature.
#[derive(Debug)]
pub enum Judged {
    /// Refused before its signature is looked at (its form, its header): as when it is
    /// verified here, whatever the signature.
    Before(Error),
    /// What it proves if its signature is valid: its claims, or why they are refused.
    After(Box<Result<Claims, Error>>),
}

/// jwt-simple's checks of the token's header and claims, for a token whose signature is
/// `signature` over `signing_input` (not checked here).
pub fn judge(
    algorithm: Algorithm,
    token: &str,
    signing_input: &str,
    signature: &[u8],
    options: VerificationOptions,
) -> Judged {
    macro_rules! check {
        ($($alg:ident),*) => {
            match algorithm {
                $(Algorithm::$alg => {
                    let key = Checked::<$alg>::new(signing_input, signature);
                    let claims = key.verify_token(token, Some(options));
                    judged(claims, key.reached.get())
                })*
                Algorithm::HS256 => Judged::Before(JWTError::AlgorithmMismatch.into()),
            }
        };
    }
    check!(
        RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA
    )
}

/// jwt-simple's answer, `reached`: it asked for the tag (what it refused, it refused after the
/// signature).
fn judged(claims: Result<Claims, Error>, reached: bool) -> Judged {
    match (claims, reached) {
        (claims, true) => Judged::After(Box::new(claims)),
        (Err(e), false) => Judged::Before(e),
        // Accepted without a look at the signature: never; refused as a bad one.
        (Ok(_), false) => Judged::Before(JWTError::InvalidAuthenticationTag.into()),
    }
}

/// The algorithms as types, for [`MACLike::jwt_alg_name`].
trait Named {
    const NAME: &'static str;
}

macro_rules! named {
    ($($alg:ident => $name:literal),* $(,)?) => {
        $(
            #[allow(clippy::upper_case_acronyms)]
            struct $alg;
            impl Named for $alg {
                const NAME: &'static str = $name;
            }
        )*
    };
}

named!(
    RS256 => "RS256", RS384 => "RS384", RS512 => "RS512",
    PS256 => "PS256", PS384 => "PS384", PS512 => "PS512",
    ES256 => "ES256", ES384 => "ES384", EdDSA => "EdDSA",
);

/// See the module's documentation: the "tag" of exactly one signing input is the token's
/// signature; of anything else, nothing (which never matches).
struct Checked<A> {
    signing_input: Vec<u8>,
    signature: Vec<u8>,
    /// jwt-simple refuses MAC keys shorter than 12 bytes; this one is never used as a key.
    placeholder: HMACKey,
    key_id: Option<String>,
    metadata: Option<KeyMetadata>,
    /// jwt-simple came to the signature (asked for the tag).
    reached: std::cell::Cell<bool>,
    algorithm: std::marker::PhantomData<A>,
}

impl<A> Checked<A> {
    fn new(signing_input: &str, signature: &[u8]) -> Self {
        Self {
            signing_input: signing_input.as_bytes().to_vec(),
            signature: signature.to_vec(),
            placeholder: HMACKey::from_bytes(&[0u8; 32]),
            key_id: None,
            metadata: None,
            reached: std::cell::Cell::new(false),
            algorithm: std::marker::PhantomData,
        }
    }
}

impl<A: Named> MACLike for Checked<A> {
    fn jwt_alg_name() -> &'static str {
        A::NAME
    }

    fn key(&self) -> &HMACKey {
        &self.placeholder
    }

    fn key_id(&self) -> &Option<String> {
        &self.key_id
    }

    fn set_key_id(&mut self, key_id: String) {
        self.key_id = Some(key_id);
    }

    fn metadata(&self) -> &Option<KeyMetadata> {
        &self.metadata
    }

    fn attach_metadata(&mut self, _metadata: KeyMetadata) -> Result<(), Error> {
        Err(JWTError::InvalidKeyPair.into())
    }

    fn authentication_tag(&self, authenticated: &[u8]) -> Vec<u8> {
        self.reached.set(true);
        if authenticated == self.signing_input.as_slice() {
            self.signature.clone()
        } else {
            Vec::new()
        }
    }
}
