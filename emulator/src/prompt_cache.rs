//! Bedrock's prompt cache, as far as token counts go: which prompt prefixes each model has
//! already seen. A request's cache points (Converse `cachePoint` blocks, Anthropic
//! `cache_control` marks) each end a prefix of the prompt, in Bedrock's order: tools, system,
//! messages. The longest of those prefixes the cache already holds is read; the tokens from
//! there to the last cache point are written; every prefix the request marks is remembered.
//!
//! A prefix is identified by a SHA-256 over its content (the cache marks themselves left out,
//! so moving or adding a mark does not change the content before it). Entries never expire:
//! `DELETE /cache` on the control port forgets them. Bedrock's minimum prefix lengths and TTLs
//! are not emulated.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Prefixes kept at most (over all models); the oldest are forgotten first.
pub const MAX_PREFIXES: usize = 100_000;

type Key = (String, [u8; 32]);

#[derive(Debug, Default)]
struct Entries {
    known: HashSet<Key>,
    order: VecDeque<Key>,
}

/// The prefixes each model id has seen. Shared by every request of one emulator.
#[derive(Debug)]
pub struct PromptCache {
    entries: Mutex<Entries>,
    capacity: usize,
}

impl Default for PromptCache {
    fn default() -> Self {
        Self::with_capacity(MAX_PREFIXES)
    }
}

/// Where a request's cacheable prefixes end: the prefix's hash and its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checkpoint {
    digest: [u8; 32],
    tokens: u32,
}

/// The cache points of one request, in prompt order (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoints(Vec<Checkpoint>);

impl Checkpoints {
    /// Tokens of the prompt up to the last cache point.
    pub fn prefix_tokens(&self) -> u32 {
        self.0.last().map_or(0, |c| c.tokens)
    }
}

/// What one request did with the cache, in tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUsage {
    pub read: u32,
    pub write: u32,
}

impl CacheUsage {
    /// The input tokens Bedrock reports beside these: the request's tokens not read from or
    /// written to the cache.
    pub fn uncached(&self, input_tokens: u32) -> u32 {
        input_tokens
            .saturating_sub(self.read)
            .saturating_sub(self.write)
    }
}

impl PromptCache {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            capacity: capacity.max(1),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Every update below leaves the sets consistent, even if a holder panicked.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads and writes `checkpoints` for `model_id`: the longest cached prefix is read, the
    /// rest up to the last cache point is written, and every prefix is remembered.
    pub fn use_prefixes(&self, model_id: &str, checkpoints: &Checkpoints) -> CacheUsage {
        let mut entries = self.entries();
        let key = |c: &Checkpoint| (model_id.to_string(), c.digest);
        let read = checkpoints
            .0
            .iter()
            .filter(|c| entries.known.contains(&key(c)))
            .map(|c| c.tokens)
            .max()
            .unwrap_or(0);
        let usage = CacheUsage {
            read,
            write: checkpoints.prefix_tokens().saturating_sub(read),
        };
        for checkpoint in &checkpoints.0 {
            let key = key(checkpoint);
            if entries.known.contains(&key) {
                continue;
            }
            if entries.order.len() == self.capacity
                && let Some(oldest) = entries.order.pop_front()
            {
                entries.known.remove(&oldest);
            }
            entries.known.insert(key.clone());
            entries.order.push_back(key);
        }
        usage
    }

    /// Forgets every prefix; answers how many there were.
    pub fn clear(&self) -> usize {
        let mut entries = self.entries();
        let cleared = entries.order.len();
        *entries = Entries::default();
        cleared
    }

    /// Prefixes remembered now.
    pub fn len(&self) -> usize {
        self.entries().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Walks a prompt in order, hashing its content and noting where each cache point ends a
/// prefix.
#[derive(Debug, Clone, Default)]
pub struct PrefixBuilder {
    hasher: Sha256,
    tokens: u32,
    checkpoints: Vec<Checkpoint>,
}

impl PrefixBuilder {
    /// One piece of the prompt (a tool, a system block, a message block, tagged with where it
    /// sits) worth `tokens` by the emulator's token rule.
    pub fn content(&mut self, element: &Value, tokens: u32) {
        let bytes = element.to_string();
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes.as_bytes());
        self.tokens = self.tokens.saturating_add(tokens);
    }

    /// A cache point: the content so far is a cacheable prefix.
    pub fn checkpoint(&mut self) {
        self.checkpoints.push(Checkpoint {
            digest: self.hasher.clone().finalize().into(),
            tokens: self.tokens,
        });
    }

    /// The request's cache points; `None` without any (the request does not use the cache).
    pub fn finish(self) -> Option<Checkpoints> {
        (!self.checkpoints.is_empty()).then_some(Checkpoints(self.checkpoints))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn checkpoints(parts: &[(&str, u32)]) -> Checkpoints {
        // "|" marks a cache point.
        let mut builder = PrefixBuilder::default();
        for (text, tokens) in parts {
            if *text == "|" {
                builder.checkpoint();
            } else {
                builder.content(&json!(text), *tokens);
            }
        }
        builder.finish().unwrap()
    }

    #[test]
    fn no_cache_point_means_no_checkpoints() {
        let mut builder = PrefixBuilder::default();
        builder.content(&json!("a"), 1);
        assert_eq!(builder.finish(), None);
    }

    #[test]
    fn first_writes_then_reads_per_model() {
        let cache = PromptCache::default();
        let request = checkpoints(&[("a", 3), ("b", 2), ("|", 0), ("c", 7)]);
        assert_eq!(request.prefix_tokens(), 5);
        assert_eq!(
            cache.use_prefixes("m", &request),
            CacheUsage { read: 0, write: 5 }
        );
        assert_eq!(
            cache.use_prefixes("m", &request),
            CacheUsage { read: 5, write: 0 }
        );
        // Another model has its own cache.
        assert_eq!(
            cache.use_prefixes("other", &request),
            CacheUsage { read: 0, write: 5 }
        );
        // A different prefix is written again.
        let changed = checkpoints(&[("a", 3), ("x", 2), ("|", 0)]);
        assert_eq!(
            cache.use_prefixes("m", &changed),
            CacheUsage { read: 0, write: 5 }
        );
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.clear(), 3);
        assert!(cache.is_empty());
        assert_eq!(
            cache.use_prefixes("m", &request),
            CacheUsage { read: 0, write: 5 }
        );
    }

    #[test]
    fn the_longest_cached_prefix_is_read_and_the_rest_written() {
        let cache = PromptCache::default();
        cache.use_prefixes("m", &checkpoints(&[("sys", 4), ("|", 0), ("q1", 2)]));
        let next = checkpoints(&[("sys", 4), ("|", 0), ("q1", 2), ("a1", 3), ("|", 0)]);
        assert_eq!(
            cache.use_prefixes("m", &next),
            CacheUsage { read: 4, write: 5 }
        );
        // The same prompt with only the last mark reads everything: the prefix before the
        // first mark was remembered, and marks are not content.
        let moved = checkpoints(&[("sys", 4), ("q1", 2), ("a1", 3), ("|", 0)]);
        assert_eq!(
            cache.use_prefixes("m", &moved),
            CacheUsage { read: 9, write: 0 }
        );
        assert_eq!(CacheUsage { read: 4, write: 5 }.uncached(12), 3);
    }

    #[test]
    fn capacity_forgets_the_oldest() {
        let cache = PromptCache::with_capacity(2);
        let one = checkpoints(&[("1", 1), ("|", 0)]);
        let two = checkpoints(&[("2", 1), ("|", 0)]);
        let three = checkpoints(&[("3", 1), ("|", 0)]);
        for request in [&one, &two, &three] {
            assert_eq!(cache.use_prefixes("m", request).write, 1);
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.use_prefixes("m", &three).read, 1);
        assert_eq!(cache.use_prefixes("m", &one).write, 1);
    }

    #[test]
    fn element_boundaries_matter() {
        let cache = PromptCache::default();
        cache.use_prefixes("m", &checkpoints(&[("ab", 1), ("|", 0)]));
        assert_eq!(
            cache
                .use_prefixes("m", &checkpoints(&[("a", 1), ("b", 0), ("|", 0)]))
                .read,
            0
        );
    }
}
