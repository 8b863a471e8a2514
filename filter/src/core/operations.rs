//! The operation a request calls and where it names models, for authorization, quotas and the
//! audit log. The table is generated from botocore's service models (`operations/table.rs`, its
//! rows of type [`OperationRule`] from `operations/rule.rs`); a path the table does not know is
//! still forwarded, as operation `Unknown`.

mod rule;
mod table;

pub use rule::OperationRule;

/// Name of operations the table does not know (a new API, or a path that belongs to none).
pub const UNKNOWN: &str = "Unknown";

/// What a request calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub name: &'static str,
    /// The model named in the path (decoded): `us.anthropic.claude-3-5-sonnet-20240620-v1:0`,
    /// or an ARN.
    pub path_model: Option<String>,
    /// Where the body names models; empty when it names none.
    pub body_models: &'static [&'static [&'static str]],
    /// Where the body may name models beyond `body_models`.
    pub undetermined: &'static [&'static [&'static str]],
    /// Whether the table knows the operation, and so every place its input names a model.
    pub known: bool,
}

impl Operation {
    /// Whether the body must be read before access can be decided.
    pub fn models_in_body(&self) -> bool {
        !self.body_models.is_empty()
    }
}

/// The models a call names, as far as the gateway can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Models {
    /// Each once, the primary model (the one quotas and the ledger count) first.
    pub named: Vec<String>,
    /// False when the operation is unknown: it may name models where the gateway does not
    /// look.
    pub determined: bool,
}

impl Models {
    /// The models of `operation`, with those its body names (`body_models`, primary first);
    /// `beyond_table`: the body had a value where it may name models the table does not list.
    pub fn of(operation: &Operation, body_models: Vec<String>, beyond_table: bool) -> Self {
        let mut named: Vec<String> = operation.path_model.iter().cloned().collect();
        for model in body_models {
            if !named.contains(&model) {
                named.push(model);
            }
        }
        Self {
            named,
            determined: operation.known && !beyond_table,
        }
    }

    /// The model quotas and the ledger count the call under.
    pub fn primary(&self) -> Option<&str> {
        self.named.first().map(String::as_str)
    }
}

/// Identifies the operation of a request to `service` from its method and canonical path
/// segments ([`super::path`]).
pub fn identify<S: AsRef<str>>(service: &str, method: &str, segments: &[S]) -> Operation {
    let rule = table::OPERATIONS.iter().find(|rule| {
        rule.service == service && rule.method == method && matches(rule.path, segments)
    });
    match rule {
        Some(rule) => Operation {
            name: rule.name,
            path_model: rule
                .model_segment
                .and_then(|i| segments.get(i))
                .map(|s| s.as_ref().to_string()),
            body_models: rule.body_models,
            undetermined: rule.undetermined,
            known: true,
        },
        // A runtime operation added after this table was generated names its model where
        // every model operation does, /model/{modelId}/...; whether it names others is not
        // known.
        None if service == "bedrock-runtime"
            && segments.len() >= 3
            && segments[0].as_ref() == "model" =>
        {
            Operation {
                name: UNKNOWN,
                path_model: Some(segments[1].as_ref().to_string()).filter(|m| !m.is_empty()),
                body_models: &[],
                undetermined: &[],
                known: false,
            }
        }
        None => Operation {
            name: UNKNOWN,
            path_model: None,
            body_models: &[],
            undetermined: &[],
            known: false,
        },
    }
}

fn matches<S: AsRef<str>>(pattern: &str, segments: &[S]) -> bool {
    let pattern_segments = pattern.trim_start_matches('/').split('/');
    // Lengths first: `zip` stops at the shorter side (and takes one pattern segment more
    // than a shorter path has), so a path must not be allowed to match a longer pattern.
    pattern_segments.clone().count() == segments.len()
        && pattern_segments
            .zip(segments)
            .all(|(expected, actual)| match expected {
                "*" => !actual.as_ref().is_empty(),
                literal => literal == actual.as_ref(),
            })
}

#[cfg(test)]
mod tests;
