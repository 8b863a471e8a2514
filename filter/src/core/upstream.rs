//! How the filter names the cluster of a gRPC call to Envoy. Envoy takes either a cluster name
//! or a serialized `envoy.config.core.v3.GrpcService`; with a bare name it also sends the name
//! as the call's `:authority`, which its HTTP/2 codec refuses when the name is not a valid
//! authority. Istio's cluster names are not (`outbound|18000||xds-server.NS.svc.cluster.local`),
//! so for such a name the filter sends a `GrpcService` naming the cluster and an authority of
//! its own: the host part of an Istio name, else a fixed one.

use std::borrow::Cow;

/// Authority for a cluster whose name gives none.
const FALLBACK_AUTHORITY: &str = "bedrock-gateway-control";

/// What to hand Envoy for a call to `cluster`: the name itself when it is a valid authority
/// (the usual case, nothing allocated), else an encoded `GrpcService`.
pub fn grpc_target(cluster: &str) -> Cow<'_, str> {
    if is_authority(cluster) {
        return Cow::Borrowed(cluster);
    }
    let authority = cluster
        .rsplit('|')
        .next()
        .filter(|host| !host.is_empty() && is_authority(host))
        .unwrap_or(FALLBACK_AUTHORITY);
    // EnvoyGrpc { cluster_name = 1, authority = 2 } inside GrpcService { envoy_grpc = 1 }.
    let mut inner = Vec::with_capacity(cluster.len() + authority.len() + 4);
    field(&mut inner, 1, cluster.as_bytes());
    field(&mut inner, 2, authority.as_bytes());
    let mut service = Vec::with_capacity(inner.len() + 3);
    field(&mut service, 1, &inner);
    // Lengths below 128 encode as one byte below 0x80, so the whole is ASCII; a longer name
    // would not be text: hand it over as it is (Envoy then refuses the call, and the filter
    // logs why).
    String::from_utf8(service).map_or(Cow::Borrowed(cluster), Cow::Owned)
}

fn is_authority(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'~'))
}

/// A length-delimited protobuf field.
fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
    out.push((number << 3) | 2);
    let mut length = bytes.len();
    loop {
        let byte = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct EnvoyGrpc {
        #[prost(string, tag = "1")]
        cluster_name: String,
        #[prost(string, tag = "2")]
        authority: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct GrpcService {
        #[prost(message, optional, tag = "1")]
        envoy_grpc: Option<EnvoyGrpc>,
    }

    fn decoded(target: &str) -> EnvoyGrpc {
        <GrpcService as prost::Message>::decode(target.as_bytes())
            .unwrap()
            .envoy_grpc
            .unwrap()
    }

    #[test]
    fn a_name_that_is_an_authority_goes_as_it_is() {
        for name in [
            "gateway_control",
            "gateway_quota",
            "xds-server.ns.svc:18000",
        ] {
            assert!(matches!(grpc_target(name), Cow::Borrowed(n) if n == name));
        }
    }

    #[test]
    fn an_istio_name_goes_as_a_grpc_service_with_its_host_as_authority() {
        let name = "outbound|18000||xds-server.bedrock-gateway.svc.cluster.local";
        let target = grpc_target(name);
        assert_eq!(
            decoded(&target),
            EnvoyGrpc {
                cluster_name: name.into(),
                authority: "xds-server.bedrock-gateway.svc.cluster.local".into()
            }
        );
    }

    #[test]
    fn other_names_get_the_fixed_authority() {
        for name in ["control plane", "outbound|18000||", "a|b c"] {
            let target = grpc_target(name);
            assert_eq!(decoded(&target).cluster_name, name);
            assert_eq!(decoded(&target).authority, FALLBACK_AUTHORITY);
        }
    }

    #[test]
    fn long_names_encode_their_length_in_several_bytes_or_go_as_they_are() {
        let name = format!("outbound|18000||{}", "x".repeat(100));
        // 100 + 16 characters, and the host: over 127 bytes inside, not text any more.
        assert!(matches!(grpc_target(&name), Cow::Borrowed(n) if n == name));
        let mut out = Vec::new();
        field(&mut out, 1, &[0; 300]);
        assert_eq!(&out[..3], &[0x0a, 0xac, 0x02]);
    }
}
