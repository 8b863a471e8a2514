//! The request path as every decision sees it. A path is read once, here: split into
//! segments and percent-decoded. Routing, the operation, the model, quotas, the ledger and the
//! audit log all use these segments, and the path that is signed and forwarded is the one they
//! were read from, byte for byte. A path that another reader (Envoy, Bedrock's front end, a
//! proxy on the way) could read differently is refused before anything else:
//!
//! - empty segments (`//`), except a final one: the trailing slash of `/agents/`, which some
//!   Bedrock operations have;
//! - `.` and `..` segments, plain or encoded;
//! - percent-encoded unreserved characters (`%2E`, `%41`, ...): no SDK encodes them, and they
//!   would let `/mod%65l/...` pass for something other than `/model/...`;
//! - encoded `/` (`%2F`) outside an ARN (SDKs encode the `/` of
//!   `arn:...:application-inference-profile/ID` in a model id), and ARNs whose encoded parts
//!   are empty or dot segments;
//! - encoded `%` (double encoding), `\`, `;` (path parameters some servers strip), control
//!   characters, bytes that are not UTF-8 once decoded;
//! - raw characters outside RFC 3986's path characters: spaces, controls, non-ASCII, `\`, `"`,
//!   `<`, `>`, `{`, `}`, `|`, `^`, `` ` ``, `#` (a fragment).
//!
//! Envoy is told not to change the path on its way in (`normalize_path: false`,
//! `merge_slashes: false`, `path_with_escaped_slashes_action: KEEP_UNCHANGED` in the rendered
//! listener), so the filter sees what the client sent and what Bedrock will receive.

use std::fmt;

/// A path that reads one way only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    /// Percent-decoded segments after the leading `/`; a trailing slash gives a final empty
    /// segment.
    pub segments: Vec<String>,
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    Fragment,
    ForbiddenCharacter,
    BadEscape,
    EncodedUnreserved,
    EncodedForbidden,
    EncodedSlash,
    EmptySegment,
    DotSegment,
}

impl PathError {
    /// What the caller is told (in a 400 `ValidationException`).
    pub fn message(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "The request path must start with /.",
            PathError::Fragment => "The request path must not contain a fragment (#).",
            PathError::ForbiddenCharacter => {
                "The request path contains a character that must be percent-encoded or is not allowed."
            }
            PathError::BadEscape => "The request path contains a malformed percent-encoding.",
            PathError::EncodedUnreserved => {
                "The request path percent-encodes a character that must be sent as it is (letters, digits, - . _ ~)."
            }
            PathError::EncodedForbidden => {
                "The request path percent-encodes a character that is not allowed in it (control characters, %, \\, ;) or bytes that are not UTF-8."
            }
            PathError::EncodedSlash => {
                "The request path contains an encoded / (%2F) outside a well-formed ARN."
            }
            PathError::EmptySegment => "The request path contains an empty segment (//).",
            PathError::DotSegment => "The request path contains a . or .. segment.",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// The part of `:path` before the query.
pub fn without_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

/// Reads `path` (the whole `:path`, query included; the query is only checked for characters
/// that never belong in a request target).
pub fn canonical(path: &str) -> Result<RequestPath, PathError> {
    if path.contains('#') {
        return Err(PathError::Fragment);
    }
    let (raw, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    if let Some(query) = query
        && query.bytes().any(|b| !is_visible_ascii(b) || b == b'\\')
    {
        return Err(PathError::ForbiddenCharacter);
    }
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let raw_segments: Vec<&str> = rest.split('/').collect();
    let last = raw_segments.len() - 1;
    let mut segments = Vec::with_capacity(raw_segments.len());
    for (i, raw_segment) in raw_segments.iter().enumerate() {
        if raw_segment.is_empty() && i != last {
            return Err(PathError::EmptySegment);
        }
        let (segment, encoded_slash) = decode_segment(raw_segment)?;
        if segment == "." || segment == ".." {
            return Err(PathError::DotSegment);
        }
        if encoded_slash && !is_clean_arn(&segment) {
            return Err(PathError::EncodedSlash);
        }
        segments.push(segment);
    }
    Ok(RequestPath { segments })
}

fn is_visible_ascii(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// RFC 3986 `pchar` without `;` (path parameters) and `%` (handled as escapes).
fn allowed_raw(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes one segment; the second value says whether it held an encoded `/`.
fn decode_segment(raw: &str) -> Result<(String, bool), PathError> {
    if !raw.contains('%') {
        return if raw.bytes().all(allowed_raw) {
            Ok((raw.to_string(), false))
        } else {
            Err(PathError::ForbiddenCharacter)
        };
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut encoded_slash = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            if !allowed_raw(b) {
                return Err(PathError::ForbiddenCharacter);
            }
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(high), Some(low)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadEscape);
        };
        let decoded = high << 4 | low;
        if is_unreserved(decoded) {
            return Err(PathError::EncodedUnreserved);
        }
        if decoded < 0x20 || matches!(decoded, 0x7f | b'%' | b'\\' | b';') {
            return Err(PathError::EncodedForbidden);
        }
        encoded_slash |= decoded == b'/';
        out.push(decoded);
        i += 3;
    }
    String::from_utf8(out)
        .map(|s| (s, encoded_slash))
        .map_err(|_| PathError::EncodedForbidden)
}

/// The value of a hexadecimal digit.
pub(super) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// An ARN whose `/`-separated parts are neither empty nor dot segments: nothing that a reader
/// decoding `%2F` into `/` could resolve to another resource.
fn is_clean_arn(segment: &str) -> bool {
    segment.starts_with("arn:")
        && segment
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(path: &str) -> Vec<String> {
        canonical(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .segments
    }

    #[test]
    fn ordinary_paths_read_as_sent() {
        assert_eq!(segments("/model/m/converse"), ["model", "m", "converse"]);
        assert_eq!(
            segments("/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse?x=1&y=%2F"),
            [
                "model",
                "us.anthropic.claude-3-5-sonnet-20240620-v1:0",
                "converse"
            ]
        );
        // Raw `:` is as good as `%3A`.
        assert_eq!(
            segments("/model/anthropic.claude-v2:1/invoke"),
            ["model", "anthropic.claude-v2:1", "invoke"]
        );
        assert_eq!(segments("/agents/"), ["agents", ""]);
        assert_eq!(segments("/sessions/s-1/"), ["sessions", "s-1", ""]);
        assert_eq!(segments("/"), [""]);
        assert_eq!(
            segments(
                "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fa1b2c3/converse"
            )[1],
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"
        );
        assert_eq!(
            segments("/tags/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aagent%2FA1"),
            ["tags", "arn:aws:bedrock:us-east-1:1:agent/A1"]
        );
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        use PathError::*;
        let cases = [
            ("model/m/converse", NotAbsolute),
            ("", NotAbsolute),
            ("/model//meta.llama3/converse", EmptySegment),
            ("//model/m/converse", EmptySegment),
            ("/model/anthropic.x/../meta.llama3/converse", DotSegment),
            ("/model/./converse", DotSegment),
            (
                "/model/anthropic.x/%2E%2E/meta.llama3/converse",
                EncodedUnreserved,
            ),
            ("/model/anthropic.x/%2e./meta/converse", EncodedUnreserved),
            ("/mod%65l/m/converse", EncodedUnreserved),
            (
                "/model/anthropic.x%2F..%2Fmeta.llama3/converse",
                EncodedSlash,
            ),
            (
                "/model/anthropic.x%2F%2E%2E%2Fmeta/converse",
                EncodedUnreserved,
            ),
            ("/model/anthropic.x%2Fmeta/converse", EncodedSlash),
            ("/model/arn%3Aaws%2F%2Fx/converse", EncodedSlash),
            ("/model/arn%3Aaws%3Ab%2F/converse", EncodedSlash),
            ("/model/a%5C..%5Cb/converse", EncodedForbidden),
            ("/model/a%00b/converse", EncodedForbidden),
            ("/model/a%0Ab/converse", EncodedForbidden),
            ("/model/a%252Fb/converse", EncodedForbidden),
            ("/model/a%3Bb/converse", EncodedForbidden),
            ("/model/a%FFb/converse", EncodedForbidden),
            ("/model/a%2/converse", BadEscape),
            ("/model/a%zz/converse", BadEscape),
            ("/model/a%", BadEscape),
            ("/model/a;x=1/converse", ForbiddenCharacter),
            ("/model/anthropic.x;/..;/meta/converse", ForbiddenCharacter),
            ("/model/a\\..\\b/converse", ForbiddenCharacter),
            ("/model/a b/converse", ForbiddenCharacter),
            ("/model/a\tb/converse", ForbiddenCharacter),
            ("/model/é/converse", ForbiddenCharacter),
            ("/model/a\"b/converse", ForbiddenCharacter),
            ("/model/m/converse?x=\u{1}", ForbiddenCharacter),
            ("/model/m/converse#frag", Fragment),
        ];
        for (path, expected) in cases {
            assert_eq!(canonical(path), Err(expected), "{path:?}");
        }
    }

    #[test]
    fn without_query_keeps_the_path() {
        assert_eq!(without_query("/a/b?c=d?e"), "/a/b");
        assert_eq!(without_query("/a"), "/a");
    }
}
