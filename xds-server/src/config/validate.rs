//! Semantic checks of a parsed [`ConfigFile`]. The first problem found is reported, with the
//! file, the dotted key and what was expected there.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use gateway_common::{
    filter_config::{Authentication, ControlConfig, FilterConfig, PathRule, UpstreamService},
    invalid_key::InvalidKey,
    names,
};

use super::{
    auth::{check_auth, map_auth_error},
    check::{Checker, MAX_DURATION_SECONDS, indexed, quoted, resolve},
    credentials::check_credentials,
    file::ConfigFile,
    model::{
        ConfigError, EndpointHost, EndpointUrl, Env, GatewayConfig, ListenerTls, Overrides,
        Upstream, cluster_name,
    },
    quota::check_quotas,
};

pub(super) fn validate(
    file: &str,
    raw: ConfigFile,
    base_dir: &Path,
    overrides: &Overrides,
    env: Env<'_>,
) -> Result<GatewayConfig, ConfigError> {
    let check = Checker::new(file);

    let address: IpAddr = raw.listener.address.parse().map_err(|_| {
        check.invalid(
            "listener.address",
            "an IP address such as 0.0.0.0 or ::",
            Some(quoted(&raw.listener.address)),
        )
    })?;
    if raw.listener.port == 0 {
        return Err(check.invalid("listener.port", "a port from 1 to 65535", Some("0".into())));
    }
    let listener_tls = match &raw.listener.tls {
        None => None,
        Some(tls) => {
            for (key, path) in [
                ("listener.tls.certificate_file", &tls.certificate_file),
                ("listener.tls.private_key_file", &tls.private_key_file),
            ] {
                if path.as_os_str().is_empty() {
                    return Err(check.invalid(key, "the path of a PEM file", Some(quoted(""))));
                }
            }
            Some(ListenerTls {
                certificate_file: resolve(base_dir, &tls.certificate_file),
                private_key_file: resolve(base_dir, &tls.private_key_file),
            })
        }
    };

    let upstream = &raw.upstream;
    let endpoint = match &upstream.endpoint_url {
        None => None,
        Some(url) => Some(parse_endpoint_url(url).ok_or_else(|| {
            check.invalid(
                "upstream.endpoint_url",
                "an http:// or https:// URL with a host, an optional port and no path, such as http://127.0.0.1:4566",
                Some(quoted(url)),
            )
        })?),
    };
    if upstream.ca_file.as_os_str().is_empty() {
        return Err(check.invalid(
            "upstream.ca_file",
            "the path of a PEM file of trusted certificate authorities",
            Some(quoted("")),
        ));
    }
    if upstream.connect_timeout_ms == 0 || upstream.connect_timeout_ms / 1000 > MAX_DURATION_SECONDS
    {
        return Err(check.invalid(
            "upstream.connect_timeout_ms",
            "a number of milliseconds above 0",
            Some(upstream.connect_timeout_ms.to_string()),
        ));
    }
    for (key, seconds) in [
        (
            "upstream.request_timeout_seconds",
            upstream.request_timeout_seconds,
        ),
        (
            "upstream.stream_idle_timeout_seconds",
            upstream.stream_idle_timeout_seconds,
        ),
    ] {
        if seconds > MAX_DURATION_SECONDS {
            return Err(check.invalid(
                key,
                "a number of seconds up to 315576000000 (0 for no limit)",
                Some(seconds.to_string()),
            ));
        }
    }

    let credentials = check_credentials(&check, upstream.credentials.as_ref(), env)?;

    let mut filter = filter_config(&raw, endpoint.is_some());
    filter
        .validate()
        .map_err(|e| map_filter_error(&check, &raw, e))?;

    let wasm_path = match (&overrides.wasm_path, &raw.filter.wasm_path) {
        (Some(path), _) => std::path::absolute(path).unwrap_or_else(|_| path.clone()),
        (None, Some(path)) if !path.as_os_str().is_empty() => resolve(base_dir, path),
        (None, found) => {
            return Err(check.invalid(
                "filter.wasm_path",
                "the path of the filter's .wasm file (or `serve --wasm-path`)",
                found.as_ref().map(|p| quoted(&p.display().to_string())),
            ));
        }
    };

    let auth = check_auth(&check, raw.auth.as_ref(), base_dir, env)?;
    let quotas = match &raw.quotas {
        Some(section) => Some(check_quotas(&check, section, env)?),
        None => None,
    };
    if auth.authentication != Authentication::None || quotas.is_some() {
        filter.authentication = auth.authentication;
        filter.quota = quotas.as_ref().map(|q| q.filter.clone());
        filter
            .validate()
            .map_err(|e| map_filter_error(&check, &raw, e))?;
    }

    Ok(GatewayConfig {
        listener: SocketAddr::new(address, raw.listener.port),
        listener_tls,
        upstream: Upstream {
            region: upstream.region.clone(),
            endpoint,
            services: upstream.services.clone(),
            ca_file: resolve(base_dir, &upstream.ca_file),
            connect_timeout: Duration::from_millis(upstream.connect_timeout_ms),
            request_timeout: Duration::from_secs(upstream.request_timeout_seconds),
            stream_idle_timeout: Duration::from_secs(upstream.stream_idle_timeout_seconds),
            max_request_body_bytes: upstream.max_request_body_bytes,
            credentials,
        },
        wasm_path,
        filter,
        audit_log: auth.audit_log,
        identity: auth.identity,
        quotas: quotas.map(|q| q.settings),
    })
}

/// The filter's configuration, before validation. Hosts are always the real AWS hosts: they
/// are signed, even when requests travel through `endpoint_url`.
fn filter_config(raw: &ConfigFile, shared_cluster: bool) -> FilterConfig {
    let upstream = &raw.upstream;
    FilterConfig {
        region: upstream.region.clone(),
        services: upstream
            .services
            .iter()
            .map(|name| UpstreamService {
                name: name.clone(),
                host: names::aws_host(name, &upstream.region),
                cluster: cluster_name(shared_cluster, name, &upstream.region),
                signing_name: names::SIGNING_NAME.to_string(),
            })
            .collect(),
        path_rules: upstream
            .path_rules
            .iter()
            .map(|rule| PathRule {
                method: rule.method.clone(),
                path: rule.path.clone(),
                service: rule.service.clone(),
            })
            .collect(),
        control: ControlConfig {
            cluster: names::CONTROL_CLUSTER.to_string(),
            timeout_ms: raw.filter.control_timeout_ms,
            credentials_refresh_seconds: raw.filter.credentials_refresh_seconds,
        },
        // Replaced by `check_auth`'s and `check_quotas`' answers once the rest is valid.
        authentication: Authentication::None,
        max_request_body_bytes: upstream.max_request_body_bytes,
        quota: None,
    }
}

/// Renames a [`FilterConfig`] key to the YAML key it comes from and adds the value found there.
fn map_filter_error(check: &Checker<'_>, raw: &ConfigFile, error: InvalidKey) -> ConfigError {
    let upstream = &raw.upstream;
    let key = error.key.as_str();
    let (yaml_key, found) = if key == "region" {
        (
            "upstream.region".to_string(),
            Some(quoted(&upstream.region)),
        )
    } else if key == "services" {
        (
            "upstream.services".to_string(),
            Some(format!("{:?}", upstream.services)),
        )
    } else if let Some((index, _field)) = indexed(key, "services") {
        (
            format!("upstream.services[{index}]"),
            upstream.services.get(index).map(|s| quoted(s)),
        )
    } else if let Some(auth_key) = key.strip_prefix("authentication.") {
        map_auth_error(raw.auth.as_ref(), &upstream.services, auth_key)
    } else if let Some(quota_key) = key.strip_prefix("quota.") {
        // `check_quotas` refuses whatever the filter's own check would: only a derived key
        // (such as `cluster`) can end up here.
        (format!("quotas.{quota_key}"), None)
    } else if let Some((index, field)) = indexed(key, "path_rules") {
        let rule = upstream.path_rules.get(index);
        let found = rule.and_then(|r| match field {
            "method" => r.method.as_deref().map(quoted),
            "path" => Some(quoted(&r.path)),
            "service" => Some(quoted(&r.service)),
            _ => None,
        });
        (format!("upstream.path_rules[{index}].{field}"), found)
    } else {
        match key {
            "control.timeout_ms" => (
                "filter.control_timeout_ms".to_string(),
                Some(raw.filter.control_timeout_ms.to_string()),
            ),
            "control.credentials_refresh_seconds" => (
                "filter.credentials_refresh_seconds".to_string(),
                Some(raw.filter.credentials_refresh_seconds.to_string()),
            ),
            "max_request_body_bytes" => (
                "upstream.max_request_body_bytes".to_string(),
                Some(upstream.max_request_body_bytes.to_string()),
            ),
            // Keys that no YAML value feeds (the control cluster) cannot be wrong unless this
            // program is: show them as the filter names them.
            other => (format!("(filter configuration) {other}"), None),
        }
    };
    check.invalid(&yaml_key, &error.expected, found)
}

/// Parses `http(s)://host[:port]` with nothing after the authority but an optional `/`.
fn parse_endpoint_url(url: &str) -> Option<EndpointUrl> {
    let uri: http::Uri = url.parse().ok()?;
    let tls = match uri.scheme_str()? {
        "http" => false,
        "https" => true,
        _ => return None,
    };
    let authority = uri.authority()?;
    if authority.as_str().contains('@') || uri.query().is_some() || !matches!(uri.path(), "" | "/")
    {
        return None;
    }
    let host = authority.host();
    let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        EndpointHost::Ip(IpAddr::V6(v6.parse().ok()?))
    } else if let Ok(ip) = host.parse::<IpAddr>() {
        EndpointHost::Ip(ip)
    } else if !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    {
        EndpointHost::Name(host.to_ascii_lowercase())
    } else {
        return None;
    };
    let port = match authority.port_u16() {
        Some(0) => return None,
        Some(port) => port,
        None if tls => 443,
        None => 80,
    };
    Some(EndpointUrl { tls, host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        let ok = |url: &str, tls: bool, host: EndpointHost, port: u16| {
            assert_eq!(
                parse_endpoint_url(url),
                Some(EndpointUrl { tls, host, port }),
                "{url}"
            );
        };
        ok(
            "http://127.0.0.1:4566",
            false,
            EndpointHost::Ip([127, 0, 0, 1].into()),
            4566,
        );
        ok(
            "http://127.0.0.1:4566/",
            false,
            EndpointHost::Ip([127, 0, 0, 1].into()),
            4566,
        );
        ok(
            "https://[::1]",
            true,
            EndpointHost::Ip("::1".parse().unwrap()),
            443,
        );
        ok(
            "http://Emulator.local",
            false,
            EndpointHost::Name("emulator.local".into()),
            80,
        );
        for bad in [
            "127.0.0.1:4566",
            "ftp://host",
            "http://host/path",
            "http://host?x=1",
            "http://user@host",
            "http://host:0",
            "http://ho_st",
            "http://a..b",
            "http://",
        ] {
            assert_eq!(parse_endpoint_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn indexed_keys() {
        assert_eq!(indexed("services[3].name", "services"), Some((3, "name")));
        assert_eq!(
            indexed("path_rules[10].path", "path_rules"),
            Some((10, "path"))
        );
        assert_eq!(indexed("services", "services"), None);
        assert_eq!(indexed("region", "services"), None);
    }
}
