//! gRPC calls and stream opens through Envoy, and the clock: the host calls every other host
//! module makes, with their failures as values.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::core::upstream::grpc_target;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, Status};

thread_local! {
    /// Whether a call or stream to the control service failed within Envoy's own call since
    /// the root context's last tick (see [`outbound`]). One per worker: each has its own VM.
    static HELD: Cell<bool> = const { Cell::new(false) };
}

/// Starts a call or a stream to the control service with `start`, unless one failed within
/// Envoy's own call since the last tick.
///
/// Such a failure (`InternalFailure`: the cluster had no host to try, or its circuit breaker
/// was open, and Envoy's router answered at once) leaves Envoy a close to deliver once the
/// filter's callback has returned. Envoy 1.40 re-queues that close forever (the thread at 100%
/// CPU, answering nothing again, its admin included) when a stream fails that way after it in
/// the same callback. So after one, nothing more is started until the root's next tick, a
/// callback of its own: the calls fail here, without reaching Envoy, as they would have there.
pub(super) fn outbound<T>(start: impl FnOnce() -> Result<T, Status>) -> Result<T, String> {
    if HELD.get() {
        return Err(
            "not tried: a call to the control service failed at once (no host to \
                    try) a moment ago"
                .into(),
        );
    }
    start().map_err(|e| {
        if e == Status::InternalFailure {
            HELD.set(true);
        }
        format!("{e:?}")
    })
}

/// The root context's tick: calls and streams may be started again.
pub(super) fn release_outbound() {
    HELD.set(false);
}

/// Dispatches a unary gRPC call; its answer reaches the context that is active now.
pub(super) fn call(
    cluster: &str,
    service: &str,
    method: &str,
    message: &[u8],
    timeout_ms: u64,
) -> Result<u32, String> {
    outbound(|| {
        hostcalls::dispatch_grpc_call(
            &grpc_target(cluster),
            service,
            method,
            Vec::new(),
            Some(message),
            Duration::from_millis(timeout_ms),
        )
    })
}

/// Opens a gRPC stream to `service`/`method` on `cluster`; its messages and its close reach
/// the context that is active now.
pub(super) fn open_stream(cluster: &str, service: &str, method: &str) -> Result<u32, String> {
    outbound(|| hostcalls::open_grpc_stream(&grpc_target(cluster), service, method, Vec::new()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_start_failed_within_envoy_none_is_tried_until_the_tick() {
        release_outbound();
        assert_eq!(outbound(|| Ok(7)), Ok(7));
        // Failures Envoy reports later (a call that was started) hold nothing back.
        assert_eq!(
            outbound::<u32>(|| Err(Status::NotFound)),
            Err("NotFound".into())
        );
        assert_eq!(outbound(|| Ok(8)), Ok(8));

        assert_eq!(
            outbound::<u32>(|| Err(Status::InternalFailure)),
            Err("InternalFailure".into())
        );
        let mut tried = false;
        let held = outbound(|| {
            tried = true;
            Ok(9)
        });
        assert!(!tried, "started after a failure within Envoy's call");
        assert!(
            matches!(&held, Err(e) if e.starts_with("not tried")),
            "{held:?}"
        );

        release_outbound();
        assert_eq!(outbound(|| Ok(10)), Ok(10));
    }
}
