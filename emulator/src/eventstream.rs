//! `application/vnd.amazon.eventstream` frames (length-prefixed, CRC32-checked), written with
//! smithy's own encoder so the SDKs' decoder is guaranteed to agree.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;

pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

const EVENT_TYPE: &str = ":event-type";
const EXCEPTION_TYPE: &str = ":exception-type";
const MESSAGE_TYPE: &str = ":message-type";
const PAYLOAD_CONTENT_TYPE: &str = ":content-type";
const JSON: &str = "application/json";

fn string_header(name: &'static str, value: &str) -> Header {
    Header::new(name, HeaderValue::String(value.to_string().into()))
}

fn encode(message: &Message) -> Bytes {
    let mut buffer = Vec::with_capacity(message.payload().len() + 96);
    write_message_to(message, &mut buffer)
        .expect("headers and payload built here are within the event-stream limits");
    Bytes::from(buffer)
}

/// An `event` frame carrying a JSON payload.
pub fn event(event_type: &str, payload: &serde_json::Value) -> Bytes {
    let message = Message::new_from_parts(
        vec![
            string_header(EVENT_TYPE, event_type),
            string_header(PAYLOAD_CONTENT_TYPE, JSON),
            string_header(MESSAGE_TYPE, "event"),
        ],
        payload.to_string(),
    );
    encode(&message)
}

/// An `exception` frame: how a stream fails after its HTTP status was already sent.
pub fn exception(exception_type: &str, payload: &serde_json::Value) -> Bytes {
    let message = Message::new_from_parts(
        vec![
            string_header(EXCEPTION_TYPE, exception_type),
            string_header(PAYLOAD_CONTENT_TYPE, JSON),
            string_header(MESSAGE_TYPE, "exception"),
        ],
        payload.to_string(),
    );
    encode(&message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::read_message_from;

    fn header<'a>(message: &'a Message, name: &str) -> &'a str {
        message
            .headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| h.value().as_string().ok())
            .map(|s| s.as_str())
            .unwrap_or_else(|| panic!("no string header {name}"))
    }

    #[test]
    fn event_frames_round_trip() {
        let frame = event("messageStart", &serde_json::json!({"role": "assistant"}));
        let total = u32::from_be_bytes(frame[..4].try_into().unwrap());
        assert_eq!(total as usize, frame.len());
        let message = read_message_from(frame).unwrap();
        assert_eq!(header(&message, ":event-type"), "messageStart");
        assert_eq!(header(&message, ":content-type"), "application/json");
        assert_eq!(header(&message, ":message-type"), "event");
        assert_eq!(&message.payload()[..], br#"{"role":"assistant"}"#);
    }

    #[test]
    fn exception_frames_round_trip() {
        let frame = exception(
            "modelStreamErrorException",
            &serde_json::json!({"message": "boom"}),
        );
        let message = read_message_from(frame).unwrap();
        assert_eq!(header(&message, ":message-type"), "exception");
        assert_eq!(
            header(&message, ":exception-type"),
            "modelStreamErrorException"
        );
        assert_eq!(&message.payload()[..], br#"{"message":"boom"}"#);
    }

    #[test]
    fn corrupted_frames_are_rejected() {
        let mut frame = event("chunk", &serde_json::json!({"bytes": "e30="})).to_vec();
        let last = frame.len() - 5;
        frame[last] ^= 1;
        assert!(read_message_from(&frame[..]).is_err());
    }
}
