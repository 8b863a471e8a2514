//! What several modules' tests build: Bedrock's event-stream frames.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};

/// An event-stream frame as Bedrock writes one: an `event` of `event_type` with a JSON payload.
pub fn frame(event_type: &str, payload: &str) -> Vec<u8> {
    let message = Message::new(payload.as_bytes().to_vec())
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event_type.to_string().into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
    let mut out = Vec::new();
    write_message_to(&message, &mut out).unwrap();
    out
}
