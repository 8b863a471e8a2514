//! Replies Envoy generates itself (upstream unreachable, circuit breaker open, timeout) get
//! Bedrock's error shape, so SDKs raise a service exception instead of failing to parse a
//! plain-text body. Only replies carrying one of these response flags are rewritten: the
//! filter's own replies have no flag and are already shaped.

use envoy_types::pb::{
    envoy::{
        config::{
            accesslog::v3::{AccessLogFilter, ResponseFlagFilter, access_log_filter},
            core::v3::{
                HeaderValue, HeaderValueOption, SubstitutionFormatString,
                header_value_option::HeaderAppendAction, substitution_format_string,
            },
        },
        extensions::filters::network::http_connection_manager::v3::{
            LocalReplyConfig, ResponseMapper,
        },
    },
    google::protobuf::{Struct, Value, value},
};

/// Envoy response flags, and the Bedrock error code the client sees for each group.
const MAPPINGS: &[(&[&str], &str)] = &[
    // No upstream could be reached or it dropped the connection.
    (
        &["UF", "UH", "UC", "URX", "NR", "NC", "UO", "UMSDR"],
        "ServiceUnavailableException",
    ),
    // The route's request timeout (upstream.request_timeout_seconds) expired.
    (&["UT"], "ModelTimeoutException"),
];

pub fn local_reply_config() -> LocalReplyConfig {
    LocalReplyConfig {
        mappers: MAPPINGS
            .iter()
            .map(|(flags, code)| ResponseMapper {
                filter: Some(AccessLogFilter {
                    filter_specifier: Some(access_log_filter::FilterSpecifier::ResponseFlagFilter(
                        ResponseFlagFilter {
                            flags: flags.iter().map(|f| f.to_string()).collect(),
                        },
                    )),
                }),
                body_format_override: Some(json_message()),
                headers_to_add: vec![HeaderValueOption {
                    header: Some(HeaderValue {
                        key: "x-amzn-errortype".to_string(),
                        value: code.to_string(),
                        ..Default::default()
                    }),
                    append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// `{"message": "<Envoy's reason>"}`. One key only: `Struct` is a hash map, and a stable
/// encoding keeps the listener's version stable.
fn json_message() -> SubstitutionFormatString {
    let mut fields = std::collections::HashMap::new();
    fields.insert(
        "message".to_string(),
        Value {
            kind: Some(value::Kind::StringValue("%LOCAL_REPLY_BODY%".to_string())),
        },
    );
    SubstitutionFormatString {
        format: Some(substitution_format_string::Format::JsonFormat(Struct {
            fields,
        })),
        content_type: "application/json".to_string(),
        ..Default::default()
    }
}
