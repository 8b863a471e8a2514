//! The descriptor tree, as envoyproxy/ratelimit's: at each level an entry `(key, value)` first
//! matches the node with that key and value, else the node with that key and no value (the
//! default for any value). The limit of the node the whole descriptor walks to applies; none
//! when that node has none or the walk stops early. Built by the configuration check
//! (`config::quota`), which also guarantees the invariants the filter relies on (known keys,
//! `tokens` last and with a kind).

use std::collections::BTreeMap;

use gateway_common::quota_config::{ContextKey, TOKENS_KEY, TokenDescriptor, TokenKind};

use super::window::Unit;

/// What a node says about the descriptors that end on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    /// Never counted, never refused (overrides a default's limit for one value).
    Unlimited,
    Rate(RateLimit),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub unit: Unit,
    /// Hits allowed per window: requests, or tokens for `tokens` descriptors.
    pub requests_per_unit: u64,
    /// Returned to the caller in `current_limit.name`.
    pub name: Option<String>,
    /// Counted and reported, never refuses.
    pub shadow_mode: bool,
}

/// One node: its limit (if any) and its children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub limit: Option<Limit>,
    pub descriptors: Descriptors,
}

/// The children of a node (or the roots), by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptors {
    keys: BTreeMap<String, Siblings>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Siblings {
    by_value: BTreeMap<String, Node>,
    any_value: Option<Box<Node>>,
}

/// The descriptor shapes that can match a limit, as the filter sends them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shapes {
    pub request_descriptors: Vec<Vec<ContextKey>>,
    pub token_descriptors: Vec<TokenDescriptor>,
}

impl Descriptors {
    /// Adds a child; gives it back when one with the same key and value is already there.
    pub fn insert(&mut self, key: &str, value: Option<&str>, node: Node) -> Result<(), Node> {
        let siblings = self.keys.entry(key.to_string()).or_default();
        match value {
            Some(value) => {
                if siblings.by_value.contains_key(value) {
                    return Err(node);
                }
                siblings.by_value.insert(value.to_string(), node);
            }
            None => {
                if siblings.any_value.is_some() {
                    return Err(node);
                }
                siblings.any_value = Some(Box::new(node));
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The limit of the node the whole descriptor walks to.
    pub fn find<K: AsRef<str>, V: AsRef<str>>(&self, entries: &[(K, V)]) -> Option<&Limit> {
        let mut level = self;
        let mut reached = None;
        for (key, value) in entries {
            let siblings = level.keys.get(key.as_ref())?;
            let node = siblings
                .by_value
                .get(value.as_ref())
                .or(siblings.any_value.as_deref())?;
            reached = Some(node);
            level = &node.descriptors;
        }
        reached?.limit.as_ref()
    }

    /// Every distinct key path from a root to a node with a rate limit: paths ending in
    /// `tokens` become token descriptors (keys before it, kind its value), the others request
    /// descriptors. In the tree's (sorted) order, each once.
    pub fn shapes(&self) -> Shapes {
        let mut shapes = Shapes::default();
        self.collect_shapes(&mut Vec::new(), &mut shapes);
        shapes
    }

    fn collect_shapes(&self, path: &mut Vec<ContextKey>, shapes: &mut Shapes) {
        for (key, siblings) in &self.keys {
            let nodes = siblings
                .by_value
                .iter()
                .map(|(value, node)| (Some(value.as_str()), node))
                .chain(siblings.any_value.as_deref().map(|node| (None, node)));
            for (value, node) in nodes {
                let limited = matches!(node.limit, Some(Limit::Rate(_)));
                if key == TOKENS_KEY {
                    // `tokens` is always last and always has a kind (checked when built).
                    if let Some(kind) = value.and_then(TokenKind::from_name)
                        && limited
                    {
                        let shape = TokenDescriptor {
                            keys: path.clone(),
                            kind,
                        };
                        if !shapes.token_descriptors.contains(&shape) {
                            shapes.token_descriptors.push(shape);
                        }
                    }
                    continue;
                }
                let Some(context_key) = ContextKey::from_name(key) else {
                    continue;
                };
                path.push(context_key);
                if limited && !shapes.request_descriptors.contains(path) {
                    shapes.request_descriptors.push(path.clone());
                }
                node.descriptors.collect_shapes(path, shapes);
                path.pop();
            }
        }
    }
}

#[cfg(test)]
mod tests;
