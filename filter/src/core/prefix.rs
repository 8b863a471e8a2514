//! SHA-256 from the states of earlier inputs that began alike: the canonical requests SigV4
//! hashes share most of their bytes within a second.

use sha2::{Digest, Sha256};

/// SHA-256 states after the beginnings of recent canonical requests, so that a request whose
/// canonical form starts like an earlier one's hashes only what differs.
///
/// Within a second, requests to one operation on one model have the same canonical request up
/// to their payload hash: method, path, query, the signed headers (the date changes each
/// second) and the session token, which with temporary credentials is about a kilobyte, most
/// of what is hashed. The state kept is that after the whole 64-byte blocks before the
/// payload hash, and it is used only when the new canonical request starts with exactly
/// those bytes (compared in full), so the digest is the one hashing it all would give.
#[derive(Default)]
pub struct PrefixStates {
    entries: Vec<PrefixState>,
    /// The entry a miss replaces next, once the table is full.
    next: usize,
}

struct PrefixState {
    prefix: Vec<u8>,
    state: Sha256,
}

/// Canonical requests of different operations, models or seconds hashed alike at one time.
const PREFIX_STATES: usize = 8;
/// SHA-256 consumes whole blocks of 64 bytes; a state stands for a multiple of that.
pub const BLOCK: usize = 64;
/// The end of a canonical request that changes with every request: its payload hash.
const PAYLOAD_HASH_LEN: usize = 64;

impl PrefixStates {
    /// The SHA-256 of `canonical`.
    pub fn digest(&mut self, canonical: &[u8]) -> [u8; 32] {
        let stable = canonical.len().saturating_sub(PAYLOAD_HASH_LEN) / BLOCK * BLOCK;
        if stable == 0 {
            return Sha256::digest(canonical).into();
        }
        let (head, tail) = canonical.split_at(stable);
        let mut hasher = match self.entries.iter().find(|e| same_bytes(&e.prefix, head)) {
            Some(entry) => entry.state.clone(),
            None => {
                let state = Sha256::new_with_prefix(head);
                let entry = PrefixState {
                    prefix: head.to_vec(),
                    state: state.clone(),
                };
                if self.entries.len() < PREFIX_STATES {
                    self.entries.push(entry);
                } else {
                    self.entries[self.next] = entry;
                    self.next = (self.next + 1) % PREFIX_STATES;
                }
                state
            }
        };
        hasher.update(tail);
        hasher.finalize().into()
    }
}

/// `a == b`, eight bytes at a time (the `memcmp` Wasm links compares one byte at a time).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails_equal = a_words.remainder() == b_words.remainder();
    tails_equal
        && a_words.zip(b_words).all(|(x, y)| {
            u64::from_ne_bytes(x.try_into().unwrap_or_default())
                == u64::from_ne_bytes(y.try_into().unwrap_or_default())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A digest from a kept state is the digest of the whole input, for inputs that share
        /// beginnings of every length around the block boundaries, and for those that do not.
        #[test]
        fn prefix_states_digest_what_was_given(
            inputs in prop::collection::vec(
                (0usize..4, 0usize..200, prop::collection::vec(any::<u8>(), 0..140)),
                1..40,
            ),
        ) {
            let beginnings: Vec<Vec<u8>> = (0..4u8).map(|b| vec![b'a' + b; 300]).collect();
            let mut states = PrefixStates::default();
            for (which, cut, tail) in inputs {
                let mut data = beginnings[which][..cut].to_vec();
                data.extend_from_slice(&tail);
                let expected: [u8; 32] = Sha256::digest(&data).into();
                prop_assert_eq!(states.digest(&data), expected);
            }
        }
    }

    #[test]
    fn prefix_states_are_kept_per_beginning_and_bounded() {
        let mut states = PrefixStates::default();
        let canonical = |beginning: u8, tail: u8| {
            let mut data = vec![beginning; 200];
            data.extend_from_slice(&[tail; 64]);
            data
        };
        states.digest(&canonical(b'a', b'0'));
        states.digest(&canonical(b'a', b'1'));
        assert_eq!(
            states.entries.len(),
            1,
            "the second hash started from the kept state"
        );
        assert_eq!(
            states.entries[0].prefix.len(),
            192,
            "whole blocks before the payload hash"
        );
        for beginning in b'b'..b'z' {
            states.digest(&canonical(beginning, b'0'));
        }
        assert_eq!(states.entries.len(), PREFIX_STATES);
        assert!(states.digest(&[b'x'; 100]) == <[u8; 32]>::from(Sha256::digest([b'x'; 100])));
    }

    #[test]
    fn same_bytes_is_equality() {
        let data: Vec<u8> = (0..=255).collect();
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 200] {
            let a = &data[..len];
            assert!(same_bytes(a, a));
            for at in 0..len {
                let mut b = a.to_vec();
                b[at] ^= 1;
                assert!(!same_bytes(a, &b), "length {len}, byte {at}");
            }
            if len > 0 {
                assert!(!same_bytes(a, &a[..len - 1]));
            }
        }
    }
}
