//! The operation a request calls and the model it names, for authorization and the audit
//! log. The table is generated from botocore's service models (`operations/table.rs`); a path
//! the table does not know is still forwarded, as operation `Unknown`.

mod table;

/// One row of the generated table.
#[derive(Debug, Clone, Copy)]
pub struct OperationRule {
    pub service: &'static str,
    pub method: &'static str,
    /// `*` matches one non-empty segment; anything else literally.
    pub path: &'static str,
    pub name: &'static str,
    pub model_segment: Option<usize>,
}

/// Name of operations the table does not know (a new API, or a path that belongs to none).
pub const UNKNOWN: &str = "Unknown";

/// What a request calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub name: &'static str,
    /// The model id, percent-decoded (`us.anthropic.claude-3-5-sonnet-20240620-v1:0`, or an ARN).
    pub model: Option<String>,
}

/// Identifies the operation of a request to `service`.
pub fn identify(service: &str, method: &str, path: &str) -> Operation {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rule = table::OPERATIONS.iter().find(|rule| {
        rule.service == service && rule.method == method && matches(rule.path, &segments)
    });
    match rule {
        Some(rule) => Operation {
            name: rule.name,
            model: rule
                .model_segment
                .and_then(|i| segments.get(i))
                .map(|s| decode(s)),
        },
        // A runtime operation added after this table was generated still names its model
        // where every model operation does: /model/{modelId}/...
        None if service == "bedrock-runtime" && segments.len() >= 3 && segments[0] == "model" => {
            Operation {
                name: UNKNOWN,
                model: Some(decode(segments[1])).filter(|m| !m.is_empty()),
            }
        }
        None => Operation {
            name: UNKNOWN,
            model: None,
        },
    }
}

fn matches(pattern: &str, segments: &[&str]) -> bool {
    let mut pattern_segments = pattern.trim_start_matches('/').split('/');
    let mut count = 0;
    for (expected, actual) in pattern_segments.by_ref().zip(segments) {
        count += 1;
        let ok = match expected {
            "*" => !actual.is_empty(),
            literal => literal == *actual,
        };
        if !ok {
            return false;
        }
    }
    count == segments.len() && pattern_segments.next().is_none()
}

/// Percent-decodes a path segment; invalid escapes are kept as they are.
pub fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The names a model reference goes by, for matching access patterns: the id as sent; for a
/// foundation-model or inference-profile ARN also the id inside it; and for a cross-region
/// inference profile (`us.anthropic...`) also the model id without the geography prefix.
pub fn model_aliases(model: &str) -> Vec<&str> {
    let mut names = vec![model];
    if model.starts_with("arn:") {
        let resource = model.splitn(6, ':').nth(5).unwrap_or_default();
        for kind in ["foundation-model/", "inference-profile/"] {
            if let Some(id) = resource.strip_prefix(kind) {
                names.push(id);
            }
        }
    }
    for i in 0..names.len() {
        if let Some((geo, rest)) = names[i].split_once('.')
            && CROSS_REGION_PREFIXES.contains(&geo)
            && rest.contains('.')
        {
            names.push(rest);
        }
    }
    names
}

/// Geography prefixes of system-defined cross-region inference profiles.
const CROSS_REGION_PREFIXES: [&str; 8] = ["us", "eu", "apac", "us-gov", "global", "jp", "au", "ca"];

#[cfg(test)]
mod tests;
