//! gRPC calls through Envoy and the clock: the host calls every other host module makes, with
//! their failures as values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::core::upstream::grpc_target;
use proxy_wasm::hostcalls;
use proxy_wasm::types::BufferType;

/// Dispatches a unary gRPC call; its answer reaches the context that is active now.
pub(super) fn call(
    cluster: &str,
    service: &str,
    method: &str,
    message: &[u8],
    timeout_ms: u64,
) -> Result<u32, String> {
    hostcalls::dispatch_grpc_call(
        &grpc_target(cluster),
        service,
        method,
        Vec::new(),
        Some(message),
        Duration::from_millis(timeout_ms),
    )
    .map_err(|e| format!("{e:?}"))
}

/// Decodes the answer of a call.
pub(super) fn answer<M: Message + Default>(status_code: u32, size: usize) -> Result<M, String> {
    if status_code != 0 {
        let detail = hostcalls::get_grpc_status()
            .ok()
            .and_then(|(_, message)| message)
            .unwrap_or_default();
        return Err(format!("gRPC status {status_code} {detail}"));
    }
    let body = hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
        .map_err(|e| format!("{e:?}"))?;
    M::decode(body.unwrap_or_default().as_slice()).map_err(|e| e.to_string())
}

pub(super) fn system_now() -> SystemTime {
    hostcalls::get_current_time().unwrap_or_else(|_| SystemTime::now())
}

pub(super) fn now_ms() -> u64 {
    system_now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

pub(super) fn unix_now() -> u64 {
    unix_seconds(system_now())
}

pub(super) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
