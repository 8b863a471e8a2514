//! Verified tokens, so a caller repeating the same token skips signature verification until
//! the token expires. Bounded, with second-chance (CLOCK) eviction: the oldest entry goes
//! first unless it was used since it was last passed over, so a flood of tokens seen once
//! cannot push out the tokens callers keep using (their re-verification would then wait on
//! the verification budget that flood has spent). Emptied whenever the keys change, so a
//! removed key stops working at once.
//!
//! A token is found by a 128-bit SipHash-2-4 of it under a secret key of the cache's own,
//! random: a keyed hash is as good as a collision-resistant one here (nobody who does not know
//! the key can make two tokens meet, and the key never leaves the worker), and it costs a
//! fraction of a SHA-256 of the token on every cached request.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::rc::Rc;

use siphasher::sip128::{Hasher128, SipHasher24};

use super::claims::Identity;

pub type TokenKey = u128;

/// 128 secret bits for the cache's hash. std's `RandomState` draws its keys from the
/// system's random source (WASI `random_get` in Envoy) once per thread and steps them for
/// each new state: hashing a constant under two states gives secret, independent values.
fn secret() -> [u8; 16] {
    let half = |n: u64| RandomState::new().hash_one(n).to_le_bytes();
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&half(0x6b65_7930));
    key[8..].copy_from_slice(&half(0x6b65_7931));
    key
}

struct Entry {
    identity: Rc<Identity>,
    /// Unix seconds after which the token is no longer accepted (`exp` plus clock skew).
    valid_until: u64,
    /// Found since eviction last passed over it.
    used: bool,
}

pub struct TokenCache {
    secret: [u8; 16],
    entries: HashMap<TokenKey, Entry>,
    /// Eviction order (insertion, and the second chances given since); may hold keys
    /// already removed.
    order: VecDeque<TokenKey>,
    capacity: usize,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            secret: secret(),
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// What `token` is found by.
    pub fn key(&self, token: &str) -> TokenKey {
        let mut hasher = SipHasher24::new_with_key(&self.secret);
        hasher.write(token.as_bytes());
        hasher.finish128().as_u128()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&mut self, key: &TokenKey, now: u64) -> Option<Rc<Identity>> {
        let entry = self.entries.get_mut(key)?;
        if now > entry.valid_until {
            self.entries.remove(key);
            return None;
        }
        entry.used = true;
        Some(Rc::clone(&entry.identity))
    }

    pub fn insert(&mut self, key: TokenKey, identity: Rc<Identity>, valid_until: u64) {
        // Verified again (requests with one token that came before its first verdict): the
        // same entry, evicting nothing.
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.identity = identity;
            entry.valid_until = valid_until;
            return;
        }
        // Ends: each turn drops a stale key, evicts an entry or clears a `used` flag that
        // only `get` sets again.
        while self.entries.len() >= self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            match self.entries.get_mut(&old) {
                Some(entry) if entry.used => {
                    entry.used = false;
                    self.order.push_back(old);
                }
                Some(_) => {
                    self.entries.remove(&old);
                }
                None => {}
            }
        }
        self.entries.insert(
            key,
            Entry {
                identity,
                valid_until,
                used: false,
            },
        );
        self.order.push_back(key);
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(tenant: &str) -> Rc<Identity> {
        Rc::new(Identity {
            issuer: "i".into(),
            tenant: tenant.into(),
            subject: "s".into(),
            roles: vec![],
            tier: None,
            expires_at: 0,
        })
    }

    #[test]
    fn honours_expiry() {
        let mut cache = TokenCache::new(10);
        let key = cache.key("a.b.c");
        cache.insert(key, identity("t"), 100);
        assert_eq!(cache.get(&key, 100).unwrap().tenant, "t");
        assert!(cache.get(&key, 101).is_none());
        assert!(cache.is_empty(), "expired entries are dropped");
    }

    #[test]
    fn a_flood_of_tokens_seen_once_does_not_evict_a_token_in_use() {
        let mut cache = TokenCache::new(4);
        let hot = cache.key("hot");
        cache.insert(hot, identity("hot"), 1000);
        for i in 0..1000 {
            // The caller's token between every new one, as a busy caller beside a flood.
            assert_eq!(
                cache.get(&hot, 0).unwrap().tenant,
                "hot",
                "evicted after {i}"
            );
            let key = cache.key(&format!("fresh-{i}"));
            cache.insert(key, identity("fresh"), 1000);
            assert!(cache.len() <= 4);
        }
        // Once it is no longer used it ages out like any other entry.
        for i in 0..8 {
            let key = cache.key(&format!("later-{i}"));
            cache.insert(key, identity("later"), 1000);
        }
        assert!(cache.get(&hot, 0).is_none());
        assert!(cache.order.len() <= 8);
    }

    #[test]
    fn evicts_oldest_beyond_capacity() {
        let mut cache = TokenCache::new(3);
        let keys: Vec<_> = (0..5).map(|i| cache.key(&format!("token-{i}"))).collect();
        for (i, key) in keys.iter().enumerate() {
            cache.insert(*key, identity(&i.to_string()), 1000);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&keys[0], 0).is_none() && cache.get(&keys[1], 0).is_none());
        assert_eq!(cache.get(&keys[4], 0).unwrap().tenant, "4");
        // Re-inserting an existing key does not grow the order without bound.
        for _ in 0..100 {
            cache.insert(keys[4], identity("4"), 1000);
        }
        assert!(cache.order.len() <= 6);
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn a_token_verified_again_evicts_nothing() {
        let mut cache = TokenCache::new(2);
        let (a, b) = (cache.key("a"), cache.key("b"));
        cache.insert(a, identity("a"), 100);
        cache.insert(b, identity("b"), 100);
        // Two requests with `b` came before its first verdict: both insert it.
        cache.insert(b, identity("b2"), 200);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&a, 0).unwrap().tenant, "a", "evicted for nothing");
        let again = cache.get(&b, 150).unwrap();
        assert_eq!(again.tenant, "b2", "the newer verdict and its expiry");
        assert_eq!(cache.order.len(), 2);
    }

    #[test]
    fn keys_are_the_cache_s_own() {
        let (one, other) = (TokenCache::new(1), TokenCache::new(1));
        assert_ne!(one.key("a.b.c"), one.key("a.b.d"));
        assert_eq!(one.key("a.b.c"), one.key("a.b.c"));
        assert_ne!(one.key("a.b.c"), other.key("a.b.c"), "secret per cache");
    }
}
