//! The HTTP admin port: `GET /healthz`, `GET /status` (JSON), `GET /metrics` (OpenMetrics
//! text, which Prometheus reads), `GET /usage` (the usage ledger, JSON) and the ledger for
//! people ([`usage_page`]: `GET /usage.csv`, `GET /usage/budgets`, `GET /usage.html`).
//! [`respond`] maps a request to an answer (pure) except for the paths answered from the quota
//! store ([`from_store`]); [`serve_admin`] runs hyper.

use std::{convert::Infallible, sync::Arc, time::Duration};

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Bytes, service::service_fn};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub use crate::answer::Answer;
use crate::answer::quota_error;
use crate::{
    quota::{QuotaEngine, usage::UsageQuery},
    status::ServerStatus,
    usage_page,
    util::{Clock, metrics::CONTENT_TYPE as METRICS_TEXT},
};

/// How long open admin connections get to finish once the server stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Paths answered from the quota store, by [`from_store`].
const STORE_PATHS: [&str; 3] = ["/usage", "/usage.csv", "/usage/budgets"];

/// The answer to `method path` given the server's status at `now`; `None` for the paths
/// answered from the quota store ([`from_store`]).
pub fn respond(
    method: &Method,
    path: &str,
    status: &ServerStatus,
    now: std::time::SystemTime,
) -> Option<Answer> {
    let known = matches!(path, "/healthz" | "/status" | "/metrics" | "/usage.html")
        || STORE_PATHS.contains(&path);
    if !known {
        return Some(Answer::text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /status, /metrics, /usage, /usage.csv, /usage/budgets or \
             /usage.html",
        ));
    }
    if method != Method::GET && method != Method::HEAD {
        return Some(Answer::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET",
        ));
    }
    Some(match path {
        _ if STORE_PATHS.contains(&path) => return None,
        "/usage.html" => usage_page::page(),
        "/healthz" if status.is_draining() => {
            Answer::text(StatusCode::SERVICE_UNAVAILABLE, "draining: stopping soon")
        }
        "/healthz" => Answer::text(StatusCode::OK, "ok"),
        "/status" => match serde_json::to_string_pretty(&status.report(now)) {
            Ok(json) => Answer {
                status: StatusCode::OK,
                content_type: "application/json",
                headers: Vec::new(),
                body: json + "\n",
            },
            Err(e) => Answer::text(StatusCode::INTERNAL_SERVER_ERROR, &format!("status: {e}")),
        },
        _ => Answer {
            status: StatusCode::OK,
            content_type: METRICS_TEXT,
            headers: Vec::new(),
            body: status.prometheus(now),
        },
    })
}

/// `GET /usage?tenant=T&from=YYYY-MM-DD&to=YYYY-MM-DD`: the ledger's rows as
/// `{"rows":[{day, tenant, model, requests, input_tokens, output_tokens, refusals,
/// gateway_refusals, cache_read_tokens, cache_write_tokens, cost_nano_usd, cost_usd}]}`,
/// sorted.
pub async fn usage(quotas: &QuotaEngine, query: Option<&str>) -> Answer {
    let query = match UsageQuery::from_query_string(query, quotas.today()) {
        Ok(query) => query,
        Err(message) => return Answer::text(StatusCode::BAD_REQUEST, &message),
    };
    match quotas.usage(&query).await {
        Ok(rows) => match serde_json::to_string(&serde_json::json!({ "rows": rows })) {
            Ok(json) => Answer {
                status: StatusCode::OK,
                content_type: "application/json",
                headers: Vec::new(),
                body: json + "\n",
            },
            Err(e) => Answer::text(StatusCode::INTERNAL_SERVER_ERROR, &format!("usage: {e}")),
        },
        Err(error) => quota_error(error),
    }
}

/// The answer to `GET path?query` for the paths [`respond`] leaves to the quota store.
pub async fn from_store(
    path: &str,
    query: Option<&str>,
    quotas: &QuotaEngine,
    now: std::time::SystemTime,
) -> Answer {
    match path {
        "/usage.csv" => usage_page::csv(quotas, query).await,
        "/usage/budgets" => usage_page::budgets(quotas, query, now).await,
        _ => usage(quotas, query).await,
    }
}

/// Serves the admin port until `shutdown`, then gives open connections a moment to finish.
pub async fn serve_admin(
    listener: TcpListener,
    status: Arc<ServerStatus>,
    quotas: Arc<QuotaEngine>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    warn!(%error, "admin port: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let status = Arc::clone(&status);
        let quotas = Arc::clone(&quotas);
        let clock = Arc::clone(&clock);
        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
            let now = clock.now();
            let ready = respond(request.method(), request.uri().path(), &status, now);
            let path = request.uri().path().to_string();
            let query = request.uri().query().map(str::to_string);
            let head = request.method() == Method::HEAD;
            let quotas = Arc::clone(&quotas);
            async move {
                let answer = match ready {
                    Some(answer) => answer,
                    None => from_store(&path, query.as_deref(), &quotas, now).await,
                };
                let body = if head {
                    Bytes::new()
                } else {
                    Bytes::from(answer.body)
                };
                let mut response = Response::builder()
                    .status(answer.status)
                    .header(header::CONTENT_TYPE, answer.content_type)
                    .header(header::CACHE_CONTROL, "no-store");
                for (name, value) in answer.headers {
                    response = response.header(name, value);
                }
                Ok::<_, Infallible>(response.body(Full::new(body)).unwrap_or_default())
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%peer, %error, "admin connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("admin port: connections still open after the drain timeout");
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::credentials::CredentialStore;

    fn status() -> ServerStatus {
        ServerStatus::new(
            "gateway.yaml".into(),
            "abc".into(),
            UNIX_EPOCH,
            Arc::new(CredentialStore::default()),
            crate::identity::KeyManager::for_tests(),
            crate::quota::QuotaEngine::for_tests(),
        )
    }

    #[test]
    fn routes() {
        let status = status();
        let get = |path: &str| respond(&Method::GET, path, &status, UNIX_EPOCH).unwrap();
        assert_eq!(get("/healthz"), Answer::text(StatusCode::OK, "ok"));

        let answer = get("/status");
        assert_eq!(
            (answer.status, answer.content_type),
            (StatusCode::OK, "application/json")
        );
        let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(json["config_file"], "gateway.yaml");
        assert_eq!(json["config_version"], "abc");
        assert_eq!(json["loaded_at"], "1970-01-01T00:00:00Z");
        assert_eq!(json["last_error"], serde_json::Value::Null);
        assert_eq!(json["credentials"]["available"], false);
        assert_eq!(json["credentials"]["expires_at"], serde_json::Value::Null);

        let answer = get("/metrics");
        assert_eq!(answer.content_type, METRICS_TEXT);
        assert!(
            answer
                .body
                .contains("# TYPE xds_server_xds_nacks counter\n")
        );

        assert_eq!(get("/nope").status, StatusCode::NOT_FOUND);
        assert_eq!(
            respond(&Method::POST, "/status", &status, UNIX_EPOCH).map(|a| a.status),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(
            respond(&Method::POST, "/usage", &status, UNIX_EPOCH).map(|a| a.status),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(respond(&Method::GET, "/usage", &status, UNIX_EPOCH), None);
    }
}
